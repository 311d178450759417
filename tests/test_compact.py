"""Compact vectors (bertx.compact): truncation, quantization and search, checked against plain numpy and
sentence-transformers' own `quantize_embeddings`, and the `embed --precision` / `search` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bertx
from bertx.compact import VectorPrecision, dequantize, hamming_top_k, quantize, search, truncate, unpack_binary

from conftest import run_cli as run


def first_hit(stdout: str) -> str:
    """The rank-1 row of the first table `bertx search` prints."""
    return next(line for line in stdout.splitlines() if line.lstrip("│ ").startswith("1 "))


def unit_vectors(n: int, width: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def clustered(n: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around a few centres, and queries near some of them: neighbours that mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, width))
    corpus = centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, width))
    queries = corpus[rng.choice(n, 30, replace=False)] + 0.3 * rng.standard_normal((30, width))
    unit = [(x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32) for x in (corpus, queries)]
    return unit[0], unit[1]


def exact_top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ corpus.T), axis=1, kind="stable")[:, :k]


def test_truncate_keeps_the_first_dims_renormalized() -> None:
    x = unit_vectors(5, 32)
    cut = x[:, :8] / np.linalg.norm(x[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(truncate(x, 8), cut, atol=1e-6)
    np.testing.assert_array_equal(truncate(x, 8, normalize=False), x[:, :8])
    np.testing.assert_array_equal(truncate(x, None), x)
    for bad in (0, 33, -1):
        with pytest.raises(bertx.OptionError, match="truncate_dim"):
            truncate(x, bad)


def test_int8_and_uint8_match_an_independent_computation() -> None:
    x = unit_vectors(200, 16, seed=1)
    lo, hi = x.min(axis=0), x.max(axis=0)
    steps = (hi - lo) / 255
    want = np.clip(np.floor((x - lo) / steps), 0, 255)
    np.testing.assert_array_equal(quantize(x, "uint8"), want.astype(np.uint8))
    np.testing.assert_array_equal(quantize(x, "int8"), (want - 128).astype(np.int8))
    # Calibration from other vectors: values outside their range are clipped to the end buckets.
    calibration = unit_vectors(50, 16, seed=2)
    c_lo, c_hi = calibration.min(axis=0), calibration.max(axis=0)
    want = np.clip(np.floor((x - c_lo) / ((c_hi - c_lo) / 255)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(quantize(x, "uint8", calibration_embeddings=calibration), want)
    ranges = np.stack([c_lo, c_hi])
    np.testing.assert_array_equal(quantize(x, "uint8", ranges=ranges), want)
    # Bucket centres are within half a step of the original values inside the range.
    back = dequantize(quantize(x, "int8"), "int8", np.stack([lo, hi]))
    assert np.abs(back - x).max() <= steps.max() * 0.5 + 1e-6


def test_binary_packs_signs_as_sentence_transformers_does() -> None:
    x = unit_vectors(10, 20, seed=3)  # 20 dims: the last byte is padded
    packed = np.packbits(x > 0, axis=-1)
    np.testing.assert_array_equal(quantize(x, "ubinary"), packed)
    np.testing.assert_array_equal(quantize(x, "binary"), (packed.astype(np.int16) - 128).astype(np.int8))
    np.testing.assert_array_equal(unpack_binary(quantize(x, "binary"), "binary", 20), np.where(x > 0, 1.0, -1.0))


def test_quantize_agrees_with_sentence_transformers() -> None:
    quantization = pytest.importorskip("sentence_transformers.util.quantization")
    x = unit_vectors(150, 24, seed=4)
    for precision in ("int8", "uint8", "binary", "ubinary"):
        want = quantization.quantize_embeddings(x, precision=precision)
        got = quantize(x, precision)
        assert got.dtype == want.dtype, precision
        np.testing.assert_array_equal(got, want, err_msg=precision)


def test_bad_quantize_options_are_option_errors() -> None:
    x = unit_vectors(4, 8)
    with pytest.raises(bertx.OptionError, match="expected one of float32, int8"):
        quantize(x, "int4")
    with pytest.raises(bertx.OptionError, match="shape"):
        quantize(x, "int8", ranges=np.zeros((2, 7)))
    with pytest.raises(bertx.OptionError, match="float"):
        quantize(quantize(x, "int8"), "int8")
    with pytest.raises(bertx.OptionError, match="ranges"):
        search(x, quantize(x, "int8"), "int8")
    with pytest.raises(bertx.OptionError, match="cosine or dot"):
        search(x, quantize(x, "binary"), "binary", metric="euclidean")


def test_hamming_top_k_equals_brute_force() -> None:
    x = unit_vectors(300, 64, seed=5)
    q = unit_vectors(7, 64, seed=6)
    bits_c, bits_q = x > 0, q > 0
    distances = (bits_q[:, None, :] != bits_c[None, :, :]).sum(axis=2)
    hits = hamming_top_k(quantize(q, "binary"), quantize(x, "binary"), k=10, block_size=64)
    for row, (indices, scores) in enumerate(zip(hits.indices, hits.scores)):
        np.testing.assert_array_equal(scores, np.sort(distances[row])[:10])
        np.testing.assert_array_equal(distances[row][indices], scores)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_rescored_search_finds_the_exact_top_k(precision: str) -> None:
    corpus, queries = clustered(2_000, 384)  # the width of MiniLM: sign bits need a few hundred dims
    ranges = np.stack([corpus.min(axis=0), corpus.max(axis=0)]) if precision.endswith("int8") else None
    packed = quantize(corpus, precision, ranges)
    hits = search(queries, packed, precision, k=10, ranges=ranges, float_corpus=corpus, rescore_multiplier=10)
    want = exact_top_k(queries, corpus, 10)
    np.testing.assert_array_equal(hits.indices, want)
    np.testing.assert_allclose(hits.scores, np.take_along_axis(queries @ corpus.T, want, axis=1), atol=1e-5)
    # Without rescoring, int8 alone finds most exact neighbours; sign bits far fewer (near-ties in a cluster).
    rough = search(queries, packed, precision, k=10, ranges=ranges, rescore_multiplier=0, block_size=300)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rough.indices, want)])
    assert recall >= (0.9 if precision.endswith("int8") else 0.25), recall


def test_float32_search_matches_top_k() -> None:
    corpus, queries = clustered(500, 32, seed=7)
    hits = search(queries, corpus, VectorPrecision.FLOAT32, k=5)
    np.testing.assert_array_equal(hits.indices, exact_top_k(queries, corpus, 5))


def test_encode_truncate_dim(tiny_artifact: Path) -> None:
    model = bertx.Model.from_pretrained(tiny_artifact)
    texts = ["the cat sat", "a dog runs in the park"]
    full = model.encode(texts, normalize_embeddings=False)
    cut = model.encode(texts, normalize_embeddings=True, truncate_dim=8)
    np.testing.assert_allclose(cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(model.encode(texts, normalize_embeddings=False, truncate_dim=8), full[:, :8])
    with pytest.raises(bertx.OptionError, match="truncate_dim"):
        model.encode(texts, truncate_dim=full.shape[1] + 1)


def test_cli_writes_quantized_npz_and_searches_it(tiny_artifact: Path, tmp_path: Path) -> None:
    docs = ["the cat sat on the mat", "stock markets fell sharply", "a recipe for bread", "rain is expected"]
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(docs) + "\n")
    out = tmp_path / "docs.npz"
    result = run("embed", str(tiny_artifact), "-i", str(corpus), "-o", str(out), "--precision", "int8", "--keep-float")
    assert result.returncode == 0, result.stderr
    floats = bertx.Model.from_pretrained(tiny_artifact).encode(docs)
    with np.load(out) as data:
        np.testing.assert_allclose(data["float_vectors"], floats, atol=1e-5)
        ranges = np.stack([floats.min(axis=0), floats.max(axis=0)])
        np.testing.assert_allclose(data["ranges"], ranges, atol=1e-6)
        assert data["vectors"].dtype == np.int8
        # Bucket boundaries are sensitive to the last float bit: allow a neighbouring bucket.
        assert np.abs(data["vectors"].astype(int) - quantize(floats, "int8", ranges).astype(int)).max() <= 1
        assert json.loads(str(data["meta"]))["precision"] == "int8"
    result = run("search", str(out), docs[1], "-k", "2")
    assert result.returncode == 0, result.stderr
    assert "int8 dot product" in result.stderr and "stored float vectors" in result.stderr
    assert docs[1] in first_hit(result.stdout), result.stdout

    binary = tmp_path / "bits.npz"
    result = run("embed", str(tiny_artifact), "-i", str(corpus), "-o", str(binary), "--precision", "binary")
    assert result.returncode == 0, result.stderr
    with np.load(binary) as data:
        np.testing.assert_array_equal(data["vectors"], (np.packbits(floats > 0, axis=-1).astype(int) - 128))
        assert "ranges" not in data.files and "float_vectors" not in data.files
    result = run("search", str(binary), docs[2], "-k", "1", "--rescore-multiplier", "4")
    assert result.returncode == 0, result.stderr
    assert "Hamming" in result.stderr and "±1" in result.stderr
    assert docs[2] in first_hit(result.stdout), result.stdout


def test_cli_truncate_dim_is_recorded_and_used_by_search(tiny_artifact: Path, tmp_path: Path) -> None:
    docs = ["the cat sat on the mat", "stock markets fell sharply"]
    out = tmp_path / "cut.npz"
    options = ["--truncate-dim", "8", "--precision", "uint8", "--keep-float", "--dtype", "float16"]
    result = run("embed", str(tiny_artifact), *docs, "-o", str(out), *options)
    assert result.returncode == 0, result.stderr
    want = bertx.Model.from_pretrained(tiny_artifact).encode(docs, truncate_dim=8)
    with np.load(out) as data:
        assert data["vectors"].shape == (2, 8) and data["vectors"].dtype == np.uint8
        assert data["float_vectors"].dtype == np.float16 and data["ranges"].shape == (2, 8)
        np.testing.assert_allclose(data["float_vectors"], want, atol=1e-3)
        assert json.loads(str(data["meta"]))["truncate_dim"] == 8
    result = run("search", str(out), docs[0], "-k", "1")
    assert result.returncode == 0, result.stderr
    assert docs[0] in first_hit(result.stdout), result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "int8", "-o", "v.jsonl"], "FILE.npz"),
        (["--precision", "int8", "-o", "v.npy"], "FILE.npz"),
        (["--precision", "int8"], "FILE.npz"),
        (["--keep-float", "-o", "v.npz"], "--precision"),
        (["--truncate-dim", "0", "-o", "v.npz"], "truncate_dim"),
        (["--precision", "binary", "--pooling", "none", "-o", "v.jsonl"], "sentence vectors"),
    ],
)
def test_cli_bad_compact_options_are_one_red_line(
    tiny_artifact: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [str(tmp_path / a) if a.startswith("v.") else a for a in args]
    result = run("embed", str(tiny_artifact), "a text", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and result.stderr.count("error:") == 1
