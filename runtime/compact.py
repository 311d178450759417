"""Compact vectors: Matryoshka truncation, int8 / uint8 / binary quantization, and search over them.

The precisions and their encodings follow sentence-transformers' `quantize_embeddings`, so files and
queries quantized by either library agree: int8/uint8 map each dimension's [min, max] calibration range
onto 256 buckets (int8 = uint8 − 128); binary packs the signs (`x > 0`) eight to a byte, as uint8
(ubinary) or shifted by −128 into int8 (binary).

Search scans the compact vectors blockwise, keeps the best `k × rescore_multiplier` rows and rescores
them with the float query against the float vectors when they were kept (or, without them, against the
dequantized / ±1 vectors), which restores almost all of the exact ranking at a fraction of the memory.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import numpy as np

from .errors import OptionError
from .options import choice
from .similarity import Hits, Metric, block_top_k, pairwise

__all__ = [
    "DEFAULT_RESCORE_MULTIPLIER",
    "VectorPrecision",
    "calibration_ranges",
    "dequantize",
    "hamming_top_k",
    "quantize",
    "search",
    "truncate",
    "unpack_binary",
]


# sentence-transformers rescores 4 × k; on the real corpus (bench/compact_recall.py, MiniLM) binary then keeps
# recall@10 0.90 of exact search and 0.98 at 10 × k, while int8 is at 1.00 either way. Rescoring 10 × k float
# rows is cheap next to the scan, so 10 is the default.
DEFAULT_RESCORE_MULTIPLIER = 10


class VectorPrecision(str, Enum):
    """How each output vector is stored: float32, per-dimension int8/uint8, or packed sign bits."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"
    BINARY = "binary"
    UBINARY = "ubinary"

    @property
    def needs_ranges(self) -> bool:
        """Whether quantizing needs per-dimension calibration ranges (int8, uint8)."""
        return self in (VectorPrecision.INT8, VectorPrecision.UINT8)

    @property
    def is_binary(self) -> bool:
        """Whether vectors are packed sign bits (binary, ubinary)."""
        return self in (VectorPrecision.BINARY, VectorPrecision.UBINARY)


def check_truncate_dim(truncate_dim: int | None, width: int) -> None:
    """Raise `OptionError` unless `truncate_dim` is None or between 1 and `width`."""
    if truncate_dim is None:
        return
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, (int, np.integer)):
        raise OptionError(f"truncate_dim must be an integer, got {truncate_dim!r}")
    if not 1 <= truncate_dim <= width:
        raise OptionError(f"truncate_dim must be between 1 and the vector width {width}, got {truncate_dim}")


def truncate(vectors: np.ndarray, truncate_dim: int | None, normalize: bool = True) -> np.ndarray:
    """Keep the first `truncate_dim` dimensions (Matryoshka style), L2-normalized again when `normalize`."""
    array = np.asarray(vectors, dtype=np.float32)
    check_truncate_dim(truncate_dim, array.shape[-1])
    if truncate_dim is None:
        return array
    cut = array[..., :truncate_dim]
    if not normalize:
        return np.ascontiguousarray(cut)
    norms = np.linalg.norm(cut, axis=-1, keepdims=True)
    return np.asarray(cut / np.maximum(norms, 1e-12), dtype=np.float32)


def calibration_ranges(vectors: np.ndarray) -> np.ndarray:
    """Per-dimension [min; max] of `vectors`: the (2, width) float32 ranges int8/uint8 quantization uses."""
    array = _floats(vectors, "calibration_embeddings")
    if len(array) == 0:
        raise OptionError("calibration ranges need at least one vector")
    return np.stack([array.min(axis=0), array.max(axis=0)]).astype(np.float32)


def quantize(
    vectors: np.ndarray,
    precision: VectorPrecision | str,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize float vectors, as sentence-transformers' `quantize_embeddings` does.

    Args:
        vectors: Float vectors, shape (n, width).
        precision: float32, int8, uint8, binary (packed signs as int8, i.e. packbits − 128) or ubinary
            (packed signs as uint8; width / 8 bytes per vector, rounded up).
        ranges: int8/uint8 only: the (2, width) per-dimension [min; max] to map onto 256 buckets. Store
            them with the vectors and pass them again for queries, so both are quantized alike.
        calibration_embeddings: int8/uint8 only, when `ranges` is not given: vectors to take the ranges
            from [the vectors themselves].

    Raises:
        OptionError: an unknown precision, integer input, or ranges of the wrong shape.
    """
    how = choice(VectorPrecision, precision, "precision")
    array = _floats(vectors, "vectors")
    if how is VectorPrecision.FLOAT32:
        return array
    if how.is_binary:
        packed = np.packbits(array > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if how is VectorPrecision.BINARY else packed
    bounds = _ranges(array, ranges, calibration_embeddings)
    starts, steps = _buckets(bounds)
    buckets = np.clip(np.floor((array - starts) / steps), 0, 255)
    return np.asarray((buckets - 128).astype(np.int8) if how is VectorPrecision.INT8 else buckets.astype(np.uint8))


def dequantize(quantized: np.ndarray, precision: VectorPrecision | str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Approximate float vectors back: bucket centres for int8/uint8 (needs `ranges`), ±1 for binary."""
    how = choice(VectorPrecision, precision, "precision")
    if how is VectorPrecision.FLOAT32:
        return np.asarray(quantized, dtype=np.float32)
    if how.is_binary:
        return unpack_binary(quantized, how, None)
    if ranges is None:
        raise OptionError(f"{how.value} vectors need their calibration ranges to be read back")
    starts, steps = _buckets(np.asarray(ranges, dtype=np.float32))
    buckets = quantized.astype(np.float32) + (128.0 if how is VectorPrecision.INT8 else 0.0)
    return np.asarray(starts + (buckets + 0.5) * steps, dtype=np.float32)


def unpack_binary(packed: np.ndarray, precision: VectorPrecision | str, width: int | None) -> np.ndarray:
    """Packed sign bits back to ±1 float32 vectors (the first `width` dimensions when given)."""
    bits = np.unpackbits(_as_bytes(packed, choice(VectorPrecision, precision, "precision")), axis=-1, count=width)
    return bits.astype(np.float32) * 2.0 - 1.0


def hamming_top_k(queries: np.ndarray, corpus: np.ndarray, k: int, block_size: int = 16_384) -> Hits:
    """Nearest packed-bit vectors by Hamming distance (XOR + popcount), blockwise; scores are distances."""
    q = np.atleast_2d(_as_bytes(queries, VectorPrecision.UBINARY))
    c = _as_bytes(corpus, VectorPrecision.UBINARY)
    if q.shape[1] != c.shape[1]:
        raise OptionError(f"packed vectors differ in width: {q.shape[1]} and {c.shape[1]} bytes")

    def negative_distances(start: int, stop: int) -> np.ndarray:
        block = c[start:stop]
        # One query at a time keeps the XOR at block × bytes instead of queries × block × bytes.
        return -np.stack([_POPCOUNT[np.bitwise_xor(block, row)].sum(axis=1, dtype=np.int32) for row in q]).astype(
            np.float32
        )

    hits = block_top_k(len(q), len(c), k, negative_distances, block_size)
    return Hits(indices=hits.indices, scores=-hits.scores)


def search(
    queries: np.ndarray,
    corpus: np.ndarray,
    precision: VectorPrecision | str,
    k: int = 10,
    ranges: np.ndarray | None = None,
    float_corpus: np.ndarray | None = None,
    rescore_multiplier: int = DEFAULT_RESCORE_MULTIPLIER,
    metric: Metric | str = Metric.COSINE,
    block_size: int = 16_384,
) -> Hits:
    """Top-k search of float queries over compact vectors, rescoring the best `k × rescore_multiplier`.

    int8/uint8: the queries are quantized with the corpus' `ranges` and both are scored as bucket centres.
    binary/ubinary: Hamming distance of the sign bits. Candidates are then rescored with the float
    queries against `float_corpus` when given, else against the dequantized (int8/uint8) or ±1 (binary)
    vectors; `rescore_multiplier=0` skips rescoring (scores are then the compact ones: for binary, minus
    the Hamming distance).

    Raises:
        OptionError: a metric other than cosine or dot, bad k / multiplier, or missing ranges.
    """
    how = choice(VectorPrecision, precision, "precision")
    measure = choice(Metric, metric, "metric")
    if measure not in (Metric.COSINE, Metric.DOT):
        raise OptionError(f"search over {how.value} vectors scores by cosine or dot, not {measure.value}")
    if k < 1 or rescore_multiplier < 0:
        raise OptionError(f"k must be ≥ 1 and rescore_multiplier ≥ 0, got {k} and {rescore_multiplier}")
    floats = np.atleast_2d(_floats(queries, "queries"))
    if how.needs_ranges and ranges is None:
        raise OptionError(f"{how.value} vectors need the calibration ranges they were quantized with")
    width = floats.shape[1]
    wanted = min(len(corpus), k * max(rescore_multiplier, 1))
    if how is VectorPrecision.FLOAT32:
        first = _scored_top_k(
            floats, lambda a, b: np.asarray(corpus[a:b], dtype=np.float32), len(corpus), wanted, measure, block_size
        )
    elif how.is_binary:
        first = hamming_top_k(quantize(floats, VectorPrecision.UBINARY), corpus, wanted, block_size)
        first = Hits(first.indices, -first.scores)
    else:
        q = dequantize(quantize(floats, how, ranges), how, ranges)
        first = _scored_top_k(
            q, lambda a, b: dequantize(np.asarray(corpus[a:b]), how, ranges), len(corpus), wanted, measure, block_size
        )
    if rescore_multiplier == 0:
        return Hits(first.indices[:, :k], first.scores[:, :k])
    indices = np.empty((len(floats), min(k, wanted)), dtype=np.int64)
    scores = np.empty(indices.shape, dtype=np.float32)
    for i, (query, rows) in enumerate(zip(floats, first.indices)):
        if float_corpus is not None:
            candidates = np.asarray(float_corpus[np.sort(rows)], dtype=np.float32)
        elif how.is_binary:
            candidates = unpack_binary(np.asarray(corpus[np.sort(rows)]), how, width)
        else:
            candidates = dequantize(np.asarray(corpus[np.sort(rows)]), how, ranges)
        rescored = pairwise(query, candidates, measure)[0]
        order = np.argsort(-rescored, kind="stable")[: indices.shape[1]]
        indices[i], scores[i] = np.sort(rows)[order], rescored[order]
    return Hits(indices, scores)


def _scored_top_k(
    q: np.ndarray, block_of: Callable[[int, int], np.ndarray], n: int, k: int, metric: Metric, block_size: int
) -> Hits:
    def score(start: int, stop: int) -> np.ndarray:
        return pairwise(q, block_of(start, stop), metric)

    return block_top_k(len(q), n, k, score, block_size)


def _floats(vectors: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(vectors)
    if array.dtype.kind not in "f":
        raise OptionError(f"{name} to quantize must be float vectors, got dtype {array.dtype}")
    if array.ndim != 2:
        raise OptionError(f"{name} must be a 2-D array (n, width), got shape {array.shape}")
    return array.astype(np.float32, copy=False)


def _ranges(array: np.ndarray, ranges: np.ndarray | None, calibration: np.ndarray | None) -> np.ndarray:
    if ranges is None:
        return calibration_ranges(array if calibration is None else calibration)
    bounds = np.asarray(ranges, dtype=np.float32)
    if bounds.shape != (2, array.shape[1]):
        raise OptionError(f"ranges must have shape (2, {array.shape[1]}) (min; max per dimension), got {bounds.shape}")
    return bounds


def _buckets(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    steps = (bounds[1] - bounds[0]) / 255
    # A constant dimension has no spread: any step maps it to bucket 0, as sentence-transformers does.
    return bounds[0], np.where(steps == 0, 1.0, steps).astype(np.float32)


def _as_bytes(packed: np.ndarray, precision: VectorPrecision) -> np.ndarray:
    array = np.asarray(packed)
    if array.dtype == np.int8:  # binary: packbits − 128
        return (array.astype(np.int16) + 128).astype(np.uint8)
    if array.dtype != np.uint8:
        raise OptionError(f"{precision.value} vectors must be packed int8 or uint8, got dtype {array.dtype}")
    return array


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
