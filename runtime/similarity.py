"""Similarity matrices, blockwise top-k search and a PCA helper, in numpy only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from .errors import OptionError
from .options import choice


class Metric(str, Enum):
    """Pairwise scores: cosine and dot are similarities, euclidean and manhattan distances."""

    COSINE = "cosine"
    DOT = "dot"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"

    @property
    def higher_is_closer(self) -> bool:
        """Whether a larger score means more similar."""
        return self in (Metric.COSINE, Metric.DOT)


def _matrix(a: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(a, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise OptionError(f"{name} must be a vector or a 2-D array of vectors, got shape {array.shape}")
    return array


def pairwise(a: np.ndarray, b: np.ndarray | None = None, metric: Metric | str = Metric.COSINE) -> np.ndarray:
    """Score every row of `a` against every row of `b` (default: `a` itself): shape (len(a), len(b))."""
    how = choice(Metric, metric, "metric")
    x = _matrix(a, "a")
    y = x if b is None else _matrix(b, "b")
    if x.shape[1] != y.shape[1]:
        raise OptionError(f"vectors differ in width: {x.shape[1]} and {y.shape[1]}")
    if how is Metric.DOT:
        return np.asarray(x @ y.T, dtype=np.float32)
    if how is Metric.COSINE:
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        yn = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return np.asarray(xn @ yn.T, dtype=np.float32)
    if how is Metric.EUCLIDEAN:
        squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
        return np.asarray(np.sqrt(np.maximum(squared, 0.0)), dtype=np.float32)
    # One query row at a time keeps memory at len(b) × width instead of len(a) × len(b) × width.
    return np.stack([np.abs(y - row).sum(axis=1) for row in x]).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Hits:
    """Top-k results per query: `indices[q]` are corpus rows, `scores[q]` their scores, best first."""

    indices: np.ndarray
    scores: np.ndarray


def top_k(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int = 10,
    metric: Metric | str = Metric.COSINE,
    block_size: int = 16_384,
) -> Hits:
    """Best `k` corpus rows for each query, scanning the corpus in blocks so memory stays bounded.

    Memory is about len(queries) × block_size scores whatever the corpus size; `corpus` may be a
    memory-mapped array.
    """
    how = choice(Metric, metric, "metric")
    if k < 1:
        raise OptionError(f"k must be at least 1, got {k}")
    if block_size < 1:
        raise OptionError(f"block_size must be at least 1, got {block_size}")
    q = _matrix(queries, "queries")
    sign = 1.0 if how.higher_is_closer else -1.0

    def scores(start: int, stop: int) -> np.ndarray:
        return sign * pairwise(q, _matrix(np.asarray(corpus[start:stop]), "corpus"), how)

    hits = block_top_k(len(q), len(corpus), k, scores, block_size)
    return Hits(indices=hits.indices, scores=sign * hits.scores)


def block_top_k(
    queries: int, n: int, k: int, scores: Callable[[int, int], np.ndarray], block_size: int = 16_384
) -> Hits:
    """Best `k` of `n` corpus rows per query, higher scores first; `scores(start, stop)` scores one block.

    Only one block of scores and the running best `k` are held at a time, whatever `n` is.
    """
    k = min(k, n)
    best_scores = np.full((queries, 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((queries, 0), dtype=np.int64)
    for start in range(0, n, block_size):
        block = np.asarray(scores(start, min(start + block_size, n)), dtype=np.float32)
        rows = np.broadcast_to(np.arange(start, start + block.shape[1]), block.shape)
        merged_scores = np.concatenate([best_scores, block], axis=1)
        merged_rows = np.concatenate([best_rows, rows], axis=1)
        keep = np.argpartition(-merged_scores, min(k, merged_scores.shape[1]) - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_rows = np.take_along_axis(merged_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return Hits(
        indices=np.take_along_axis(best_rows, order, axis=1), scores=np.take_along_axis(best_scores, order, axis=1)
    )


def pca(vectors: np.ndarray, components: int = 2) -> np.ndarray:
    """Project vectors onto their first principal components (centered SVD), e.g. for a 2-D plot."""
    x = _matrix(vectors, "vectors").astype(np.float64)
    if not 1 <= components <= min(x.shape):
        raise OptionError(f"components must be between 1 and {min(x.shape)} for {x.shape[0]} vectors")
    centered = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    # Fix each component's sign so results do not flip between runs or platforms.
    signs = np.sign(vt[:components, np.argmax(np.abs(vt[:components]), axis=1)].diagonal())
    return np.asarray(centered @ (vt[:components].T * signs), dtype=np.float32)
