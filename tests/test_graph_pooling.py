"""The in-graph `sentence_embedding` output: plain onnxruntime and the tokenizer file, with no bertx in the
process, give the same vectors as `Model.encode`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import bertx
from bertx.cli import app
from bertx.errors import ExportError
from bertx.manifest import Manifest, Pooling

TEXTS = [
    "the quick brown fox jump over the lazy dog",
    "a man eat food",
    "",
    "rain!",
    "the cat and the dog play in the park at night with people",
]

# What a user of another language's onnxruntime binding does: tokenizer.json, pad to the longest, run.
PLAIN_ONNXRUNTIME = """
import json, sys
import numpy as np, onnxruntime
from tokenizers import Tokenizer

folder, graph, max_length, texts = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
tokenizer.enable_truncation(max_length)
tokenizer.enable_padding(pad_id=int(sys.argv[5]))
encodings = tokenizer.encode_batch(texts)
session = onnxruntime.InferenceSession(f"{folder}/{graph}", providers=["CPUExecutionProvider"])
arrays = {
    "input_ids": [e.ids for e in encodings],
    "attention_mask": [e.attention_mask for e in encodings],
    "token_type_ids": [e.type_ids for e in encodings],
}
feeds = {i.name: np.array(arrays[i.name], dtype=np.int64) for i in session.get_inputs()}
vectors = session.run(["sentence_embedding"], feeds)[0]
assert not any(name == "bertx" or name.startswith("bertx.") for name in sys.modules), "bertx was imported"
print(json.dumps(vectors.tolist()))
"""


def plain_vectors(artifact: Path, graph: str, texts: list[str]) -> np.ndarray:
    manifest = Manifest.load(artifact)
    args = [str(artifact), graph, str(manifest.defaults.max_seq_length), json.dumps(texts)]
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_ONNXRUNTIME, *args, str(manifest.tokenizer.pad_token_id)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return np.array(json.loads(proc.stdout), dtype=np.float32)


def with_pooling(model: Path, folder: Path, pooling: Pooling, normalize: bool) -> Path:
    """A copy of `model` as a sentence-transformers folder whose default is `pooling` (and Normalize)."""
    shutil.copytree(model, folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    mode = {
        Pooling.CLS: "cls_token",
        Pooling.MEAN: "mean_tokens",
        Pooling.MAX: "max_tokens",
        Pooling.MEAN_SQRT_LEN: "mean_sqrt_len_tokens",
    }[pooling]
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({f"pooling_mode_{mode}": True}))
    return folder


@pytest.mark.parametrize(
    ("pooling", "normalize"),
    [(Pooling.MEAN, False), (Pooling.CLS, True), (Pooling.MAX, False), (Pooling.MEAN_SQRT_LEN, True)],
)
def test_plain_onnxruntime_gets_the_runtime_vectors(
    tmp_path: Path, tiny_bert: Path, export_tiny: Callable[..., Path], pooling: Pooling, normalize: bool
) -> None:
    folder = with_pooling(tiny_bert, tmp_path / "model", pooling, normalize)
    artifact = export_tiny(folder, sentence_embedding=True, fp16=pooling is Pooling.MEAN)
    manifest = Manifest.load(artifact)
    pooled = manifest.sentence_embedding
    assert pooled is not None and (pooled.pooling, pooled.normalize) == (pooling, normalize)
    for precision, variant in manifest.variants.items():
        report = variant.parity
        assert report is not None and report.passed and report.sentence_embedding is not None, precision
        assert variant.file in pooled.files
    want = bertx.Model.from_pretrained(artifact).encode(TEXTS)
    np.testing.assert_allclose(plain_vectors(artifact, "model.onnx", TEXTS), want, atol=1e-5)
    if pooling is Pooling.MEAN:
        fp16 = bertx.Model.from_pretrained(artifact, variant="fp16").encode(TEXTS)
        np.testing.assert_allclose(plain_vectors(artifact, "model.fp16.onnx", TEXTS), fp16, atol=1e-5)


def test_normalization_can_be_chosen_and_options_are_checked(
    tiny_bert: Path, export_tiny: Callable[..., Path], tmp_path: Path
) -> None:
    artifact = export_tiny(tiny_bert, sentence_embedding=True, sentence_normalize=True)
    vectors = plain_vectors(artifact, "model.onnx", TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        vectors, bertx.Model.from_pretrained(artifact).encode(TEXTS, normalize_embeddings=True), atol=1e-5
    )
    with pytest.raises(ExportError, match="go with --sentence-embedding"):
        export_tiny(tiny_bert, sentence_normalize=True)
    result = CliRunner().invoke(app, ["export", str(tiny_bert), "-o", str(tmp_path / "x"), "--no-sentence-normalize"])
    assert result.exit_code == 2 and "--sentence-embedding" in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_minilm_sentence_embedding_in_the_graph(tmp_path: Path) -> None:
    """The packaged real all-MiniLM-L6-v2 through the CLI: mean pooling and normalization in the graph, equal
    to `Model.encode` on the real corpus without bertx in the process."""
    from importlib import resources

    artifact = tmp_path / "minilm"
    result = CliRunner().invoke(
        app,
        ["export", "sentence-transformers/all-MiniLM-L6-v2", "-o", str(artifact), "--sentence-embedding", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    pooled = Manifest.load(artifact).sentence_embedding
    assert pooled is not None and pooled.pooling is Pooling.MEAN and pooled.normalize
    corpus = resources.files("bertx.bench").joinpath("data/corpus.txt").read_text(encoding="utf-8").splitlines()
    texts = [line for line in corpus if line.strip()][:64]
    got = plain_vectors(artifact, "model.onnx", texts)
    np.testing.assert_allclose(got, bertx.Model.from_pretrained(artifact).encode(texts), atol=1e-5)


NODE_EXAMPLE = Path(__file__).parent.parent / "examples" / "node"


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_EXAMPLE / "node_modules" / "onnxruntime-node").is_dir(),
    reason="needs node and `npm install` in examples/node (onnxruntime-node, @huggingface/tokenizers)",
)
def test_node_binding_gets_the_runtime_vectors(tiny_bert: Path, export_tiny: Callable[..., Path]) -> None:
    """examples/node/embed.mjs: onnxruntime-node and a JavaScript tokenizer read the artifact, no Python."""
    artifact = export_tiny(tiny_bert, sentence_embedding=True)
    texts = [t for t in TEXTS if t] + ["the dog " * 100]  # the last one is cut at the max length
    proc = subprocess.run(
        ["node", str(NODE_EXAMPLE / "embed.mjs"), str(artifact), *texts],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    with pytest.warns(bertx.TruncationWarning):
        want = bertx.Model.from_pretrained(artifact).encode(texts)
    np.testing.assert_allclose(np.array(json.loads(proc.stdout), dtype=np.float32), want, atol=1e-5)
