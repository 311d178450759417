"""A variant's parity report: how it compares with PyTorch fp32 on the built-in real text, as the manifest
records it."""

from __future__ import annotations

from dataclasses import dataclass

from .pooling import Pooling


@dataclass(frozen=True)
class Thresholds:
    """Limits a variant must meet against PyTorch fp32; `None` means not checked."""

    max_abs: float | None
    min_cosine: float


@dataclass(frozen=True)
class LayerError:
    """Max absolute difference of one hidden state over real (unpadded) tokens."""

    name: str
    max_abs: float


@dataclass(frozen=True)
class HeadParity:
    """How a variant's task-head logits compare with PyTorch's on the same text.

    `agreement` is the share of predictions (texts, or real tokens for a tagger) whose best label is
    the same as PyTorch's.
    """

    output: str
    max_abs: float
    agreement: float
    items: int


@dataclass(frozen=True)
class PooledParity:
    """How a variant's in-graph `sentence_embedding` compares with PyTorch's last layer, pooled the same way."""

    output: str
    max_abs: float
    cosine_min: float


@dataclass(frozen=True)
class ParityReport:
    """How one variant compares with PyTorch fp32 on the built-in real text."""

    passed: bool
    thresholds: Thresholds
    texts: int
    tokens: int
    pooling: Pooling
    normalize: bool
    layers: tuple[LayerError, ...]
    cosine_min: float
    cosine_mean: float
    nonfinite: bool
    head: HeadParity | None = None
    sentence_embedding: PooledParity | None = None
    # The proof (see the exporter's `proof`): `cosine_min` is over the runtime's batches, this over each
    # text alone, and the invariance is the worst cosine between a text's batched and lone vectors.
    cosine_min_single: float | None = None
    batch_invariance_min: float | None = None
    batches: str | None = None

    @property
    def max_abs(self) -> float:
        """The largest per-layer error."""
        return max((layer.max_abs for layer in self.layers), default=0.0)
