"""DistilBERT and RoBERTa export paths on real weights: the packaged MiniLM (a real BertModel)
re-written as each architecture (tests/convert.py), proved equal to the original in PyTorch, then
exported; the artifacts must reproduce the ORIGINAL BERT's sentence-transformers embeddings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from convert import to_distilbert, to_roberta
from test_export import op_counts

import bertx
from bertx.errors import ExportError
from bertx.exporter import ExportOptions, export_model
from bertx.exporter.onnx_export import read_model_facts
from bertx.exporter.parity import parity_texts
from bertx.exporter.resolve import resolve_model
from bertx.manifest import Pooling, Precision

CONVERTERS: dict[str, Callable[[Path, Path], Path]] = {"distilbert": to_distilbert, "roberta": to_roberta}
# Real, varied text with padding: the exporter's built-in parity set plus a few of our own.
EXTRA = [
    "A man is eating food.",
    "The new movie is awesome 🎬🍿!!!",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "机器学习正在改变世界。",
    "Refund my order #4471 please, it arrived on 2026-03-14 with 3 of 12 items broken.",
    "ok",
]
# The conversions are bit-exact in PyTorch (measured 0.0 on every layer); the ORT fp32 artifacts
# against the original BERT's sentence-transformers embeddings measured well under this.
ATOL = 1e-5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return parity_texts() + EXTRA


@pytest.fixture(scope="module")
def converted(minilm_source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real-weights")
    return {name: convert(minilm_source, root / name) for name, convert in CONVERTERS.items()}


@pytest.fixture(scope="module")
def artifacts(converted: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each converted model exported with fp32 (INT8 of every type: tests/test_architectures.py)."""
    root = tmp_path_factory.mktemp("real-weights-artifacts")
    options = {
        name: ExportOptions(model=str(folder), output=root / name, allow_download=False)
        for name, folder in converted.items()
    }
    return {name: export_model(option, quiet_mode=True).path for name, option in options.items()}


def hidden_states(folder: Path, texts: list[str], max_length: int = 256) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every hidden state of `folder`'s model in PyTorch, one padded batch, with its attention mask."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, output_hidden_states=True).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    if model.config.model_type != "bert":
        batch.pop("token_type_ids")  # neither takes segments (the ONNX exports have no such input)
    with torch.inference_mode():
        states = model(**batch).hidden_states
    return batch["attention_mask"].numpy().astype(bool), [h.numpy() for h in states]


@pytest.fixture(scope="module")
def bert_states(minilm_source: Path, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    return hidden_states(minilm_source, texts)


@pytest.fixture(scope="module")
def bert_embeddings(minilm_source: Path, texts: list[str]) -> np.ndarray:
    """The original BERT MiniLM's embeddings, by sentence-transformers (mean pooling, normalized)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_source), device="cpu")
    return np.asarray(model.encode(texts, batch_size=16, convert_to_numpy=True))


@pytest.mark.parametrize("name", CONVERTERS)
def test_conversion_keeps_every_hidden_state(
    name: str, converted: dict[str, Path], bert_states: tuple[np.ndarray, list[np.ndarray]], texts: list[str]
) -> None:
    from transformers import AutoModel, AutoTokenizer, BertTokenizerFast

    folder = converted[name]
    model, loading = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert model.config.model_type == name
    assert not any(loading.values()), loading  # nothing missing (randomly initialized) or left over
    assert isinstance(AutoTokenizer.from_pretrained(folder), BertTokenizerFast)
    mask, want = bert_states
    got_mask, got = hidden_states(folder, texts)
    assert (got_mask == mask).all() and len(got) == len(want) == 7
    assert mask.sum(1).min() < mask.shape[1]  # padding is involved
    for layer, (ours, theirs) in enumerate(zip(got, want)):
        # Padded positions are not compared: RoBERTa gives them position row 0, BERT a real row.
        np.testing.assert_allclose(ours[mask], theirs[mask], atol=ATOL, err_msg=f"{name} hidden_states.{layer}")


def test_bert_layer_norm_eps_is_distilberts(minilm_source: Path) -> None:
    # DistilBERT hard-codes eps 1e-12 in every LayerNorm; the mapping is exact only if BERT's is the same.
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(minilm_source).layer_norm_eps == 1e-12


@pytest.mark.parametrize("name", CONVERTERS)
def test_export_passes_the_parity_gate(name: str, artifacts: dict[str, Path]) -> None:
    manifest = bertx.Manifest.load(artifacts[name])
    architecture = manifest.architecture
    assert architecture.model_type == name
    assert (architecture.num_layers, architecture.hidden_size, architecture.num_heads) == (6, 384, 12)
    assert manifest.inputs == ("input_ids", "attention_mask")
    assert manifest.outputs == tuple(f"hidden_states.{i}" for i in range(7))
    # The sentence-transformers files travelled with the weights.
    defaults = manifest.defaults
    assert (defaults.pooling, defaults.normalize, defaults.max_seq_length) == (Pooling.MEAN, True, 256)
    assert set(manifest.variants) == {Precision.FP32}
    for precision, variant in manifest.variants.items():
        parity = variant.parity
        assert variant.validated and parity is not None and parity.passed, (precision, parity)
        assert [layer.name for layer in parity.layers] == list(manifest.outputs) and parity.texts >= 64
    fp32 = manifest.variants[Precision.FP32].parity
    assert fp32 is not None and fp32.max_abs <= 1e-4 and fp32.cosine_min >= 0.99999, fp32
    # The real-weight graphs fuse fully: one Attention per layer, two SkipLayerNormalization.
    ops = op_counts(artifacts[name] / "model.onnx")
    assert (ops["Attention"], ops["SkipLayerNormalization"], ops["BiasGelu"]) == (6, 12, 6), ops


def test_max_length_limit(converted: dict[str, Path], artifacts: dict[str, Path]) -> None:
    distilbert = read_model_facts(resolve_model(str(converted["distilbert"]), allow_download=False), None)
    roberta = read_model_facts(resolve_model(str(converted["roberta"]), allow_download=False), None)
    # RoBERTa's 513 rows hold positions 1..512 (pad 0 + 1 onwards): 512 tokens, as the original BERT.
    assert bertx.Manifest.load(artifacts["roberta"]).architecture.max_position_embeddings == 513
    assert bertx.Manifest.load(artifacts["distilbert"]).architecture.max_position_embeddings == 512
    assert distilbert.max_length_limit == roberta.max_length_limit == 512
    assert read_model_facts(resolve_model(str(converted["roberta"])), 512).defaults.max_seq_length == 512
    with pytest.raises(ExportError, match="between 2 and 512"):
        read_model_facts(resolve_model(str(converted["roberta"])), 513)


def test_roberta_runs_at_its_limit(converted: dict[str, Path], minilm_source: Path) -> None:
    # 512 real tokens use position row 512, the last one: the table is exactly large enough.
    long_text = " ".join(["word"] * 600)
    _, want = hidden_states(minilm_source, [long_text], 512)
    _, got = hidden_states(converted["roberta"], [long_text], 512)
    assert got[-1].shape == (1, 512, 384)
    np.testing.assert_allclose(got[-1], want[-1], atol=ATOL)


@pytest.mark.parametrize("name", CONVERTERS)
def test_fp32_artifact_equals_the_original_bert(
    name: str, artifacts: dict[str, Path], bert_embeddings: np.ndarray, texts: list[str]
) -> None:
    with pytest.warns(bertx.TruncationWarning):
        got = bertx.Model.from_pretrained(artifacts[name]).encode(texts, batch_size=16)
    assert got.shape == bert_embeddings.shape
    np.testing.assert_allclose(got, bert_embeddings, atol=ATOL)
