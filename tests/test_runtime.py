"""The torch-free runtime on a tiny random BERT, checked against transformers run text by text."""

from __future__ import annotations

import json
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import bertx
from bertx.errors import ArtifactError, InputError, ProviderError, VariantError

from reference import cosines, torch_sentence_embeddings

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a cat",
    "",
    "   ",
    "money in the bank , money at the river bank !",
    "é ü 42 ?",
    "they walk in the park at night and read a book",
]


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> bertx.Model:
    return bertx.Model.from_pretrained(tiny_artifact)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
@pytest.mark.parametrize("normalize", [False, True])
def test_pooling_matches_torch(model: bertx.Model, tiny_bert: Path, pooling: str, normalize: bool) -> None:
    got = model.embed(TEXTS, pooling=pooling, normalize=normalize, batch_size=3)
    want = torch_sentence_embeddings(tiny_bert, TEXTS, model.max_seq_length, pooling, normalize)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), model.hidden_size)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_defaults_come_from_manifest(model: bertx.Model, tiny_bert: Path) -> None:
    defaults = model.manifest.defaults
    assert (defaults.pooling, defaults.normalize, defaults.max_seq_length) == (bertx.Pooling.MEAN, False, 128)
    want = torch_sentence_embeddings(tiny_bert, TEXTS[:2], 128, "mean", False)
    np.testing.assert_allclose(model.embed(TEXTS[:2]), want, atol=1e-4)


def test_order_is_kept_whatever_the_batching(model: bertx.Model) -> None:
    reference = model.embed(TEXTS, batch_size=len(TEXTS))
    for batch_size in (1, 2, 5):
        np.testing.assert_allclose(model.embed(TEXTS, batch_size=batch_size), reference, atol=1e-5)
    reversed_rows = model.embed(TEXTS[::-1], batch_size=3)
    np.testing.assert_allclose(reversed_rows[::-1], reference, atol=1e-5)


@pytest.mark.parametrize("variant,min_cos", [("int8", 0.9), ("fp16", 0.999)])
def test_other_variants_run_close_to_torch(tiny_artifact: Path, tiny_bert: Path, variant: str, min_cos: float) -> None:
    got = bertx.Model.from_pretrained(tiny_artifact, variant=variant).embed(TEXTS, pooling="mean")
    want = torch_sentence_embeddings(tiny_bert, TEXTS, 128, "mean", False)
    assert np.isfinite(got).all()
    assert cosines(got, want).min() >= min_cos


def test_empty_list_gives_empty_array(model: bertx.Model) -> None:
    out = model.embed([])
    assert out.shape == (0, model.hidden_size) and out.dtype == np.float32


def test_empty_and_blank_strings_give_vectors(model: bertx.Model) -> None:
    out = model.embed(["", " \t\n "])
    assert out.shape == (2, model.hidden_size) and np.isfinite(out).all()


def test_huge_text_is_truncated_with_one_warning(model: bertx.Model, tiny_bert: Path) -> None:
    huge = "the quick brown fox " * 25_000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.embed([huge, "a cat", huge])
    truncation = [w for w in caught if issubclass(w.category, bertx.TruncationWarning)]
    assert len(truncation) == 1 and "2 of 3" in str(truncation[0].message)
    want = torch_sentence_embeddings(tiny_bert, [huge[:2000]], 128, "mean", False)
    np.testing.assert_allclose(out[0], want[0], atol=1e-4)


@pytest.mark.parametrize("bad,index", [(["ok", 3], 1), (["ok", "fine", None], 2), ([b"bytes"], 0)])
def test_non_string_item_names_its_index(model: bertx.Model, bad: list[object], index: int) -> None:
    with pytest.raises(InputError, match=f"item {index} is"):
        model.embed(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        model.embed(bad)  # type: ignore[arg-type]


def test_a_bare_string_is_refused(model: bertx.Model) -> None:
    with pytest.raises(InputError, match="list of strings"):
        model.embed("not a list")


def test_unknown_variant_lists_present_ones(tiny_artifact: Path) -> None:
    with pytest.raises(VariantError, match="fp32, int8, fp16"):
        bertx.Model.from_pretrained(tiny_artifact, variant="int4")


def test_missing_variant_is_named(tmp_path: Path, tiny_artifact: Path) -> None:
    copy = tmp_path / "a"
    shutil.copytree(tiny_artifact, copy)
    data = json.loads((copy / "bertx.json").read_text())
    del data["variants"]["int8"]
    (copy / "bertx.json").write_text(json.dumps(data))
    with pytest.raises(VariantError, match="no int8 variant; it has fp32, fp16"):
        bertx.Model.from_pretrained(copy, variant="int8")


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        bertx.Model.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="not a bertx artifact"):
        bertx.Model.from_pretrained(tmp_path)


def test_truncated_onnx_is_reported(tmp_path: Path, tiny_artifact: Path) -> None:
    copy = tmp_path / "a"
    shutil.copytree(tiny_artifact, copy)
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        bertx.Model.from_pretrained(copy)


def test_corrupt_onnx_of_the_right_size_is_reported(tmp_path: Path, tiny_artifact: Path) -> None:
    copy = tmp_path / "a"
    shutil.copytree(tiny_artifact, copy)
    size = (copy / "model.onnx").stat().st_size
    (copy / "model.onnx").write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))
    with pytest.raises(ArtifactError, match="sha256"):
        bertx.Model.from_pretrained(copy)
    # Unverified, onnxruntime's own refusal still comes back as one sentence.
    with pytest.raises(ArtifactError, match=r"cannot load model\.onnx"):
        bertx.Model.from_pretrained(copy, verify=False)


def test_foreign_tokenizer_is_refused(tmp_path: Path, tiny_artifact: Path, minilm_source: Path) -> None:
    copy = tmp_path / "a"
    shutil.copytree(tiny_artifact, copy)
    shutil.copy(minilm_source / "tokenizer.json", copy / "tokenizer.json")
    with pytest.raises(ArtifactError, match="does not match"):
        bertx.Model.from_pretrained(copy)


def test_malformed_manifest(tmp_path: Path, tiny_artifact: Path) -> None:
    copy = tmp_path / "a"
    shutil.copytree(tiny_artifact, copy)
    (copy / "bertx.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read"):
        bertx.Model.from_pretrained(copy)
    (copy / "bertx.json").write_text(json.dumps({"schema_version": 1, "variants": {}}))
    with pytest.raises(ArtifactError, match="malformed"):
        bertx.Model.from_pretrained(copy)


def test_cuda_where_unavailable(tiny_artifact: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ProviderError, match="CUDAExecutionProvider is not available"):
        bertx.Model.from_pretrained(tiny_artifact, device="cuda")
    with pytest.warns(bertx.FallbackWarning):
        fallback = bertx.Model.from_pretrained(tiny_artifact, device="cuda", allow_fallback=True)
    assert fallback.embed(["a cat"]).shape == (1, 32)


def test_threads_give_the_same_results(tiny_artifact: Path) -> None:
    model = bertx.Model.from_pretrained(tiny_artifact, threads=1)
    texts = [f"{w} the cat {i}" * (1 + i % 7) for i, w in enumerate(TEXTS * 6)]
    expected = model.embed(texts, batch_size=4)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(model.embed(texts, batch_size=4))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_tokenizer_padding_in_the_file_is_ignored(tmp_path: Path, minilm_source: Path) -> None:
    from bertx.tokenization import TextEncoder

    # The packaged MiniLM tokenizer.json pads to 128 and truncates at 128 on its own.
    encoder = TextEncoder(minilm_source / "tokenizer.json", max_length=256, pad_id=0)
    short, long = encoder.encode(["a cat", "word " * 200])
    assert len(short.ids) == 4 and len(long.ids) == 202
