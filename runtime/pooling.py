"""Mask-aware pooling of token vectors into sentence vectors, in numpy."""

from __future__ import annotations

from enum import Enum

import numpy as np


class Pooling(str, Enum):
    """How token vectors become one sentence vector (padding never contributes).

    mean_sqrt_len divides the sum by the square root of the token count; first_last_avg is mean
    pooling of the average of the first encoder layer and the last one.
    """

    CLS = "cls"
    MEAN = "mean"
    MAX = "max"
    MEAN_SQRT_LEN = "mean_sqrt_len"
    FIRST_LAST_AVG = "first_last_avg"


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """Pool `hidden` (batch, tokens, dim) over the tokens where `mask` (batch, tokens) is 1.

    Padding never contributes: mean divides by the number of real tokens, max ignores padded
    positions. The result is float32 (batch, dim).
    """
    hidden = hidden.astype(np.float32, copy=False)
    if pooling is Pooling.CLS:
        return np.ascontiguousarray(hidden[:, 0, :])
    real = mask.astype(bool)[:, :, None]
    if pooling in (Pooling.MEAN, Pooling.MEAN_SQRT_LEN, Pooling.FIRST_LAST_AVG):
        # first_last_avg arrives here with the two layers already averaged: it is mean pooling.
        total = np.where(real, hidden, np.float32(0)).sum(axis=1, dtype=np.float32)
        counts = np.maximum(real.sum(axis=1, dtype=np.float32), np.float32(1))
        divisor = np.sqrt(counts) if pooling is Pooling.MEAN_SQRT_LEN else counts
        return np.asarray(total / divisor, dtype=np.float32)
    if pooling is Pooling.MAX:
        return np.asarray(np.where(real, hidden, np.float32(-np.inf)).max(axis=1), dtype=np.float32)
    raise ValueError(f"unknown pooling {pooling!r}")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale rows to unit length; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b`, in float64."""
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    dots = (a64 * b64).sum(axis=1)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.asarray(dots / np.maximum(norms, 1e-300))
