"""The text every variant is proven on, embedded the two ways a user's text meets the runtime.

A variant's vectors are compared with PyTorch fp32 on the built-in proof set (prose, code and
identifiers, numbers and units, many languages, texts of one token and texts past the model's
length), embedded

- in the runtime's own batches: sorted longest first and cut by the same token budget as
  `Model.encode`, so that every batch shape, and the order in which an engine sees the shapes, is
  the one a user's call produces (an engine's per-shape kernel cache and a dynamic INT8 scale both
  depend on them), and
- one text at a time, as a server with batch 1 embeds them.

A text's batched and lone vectors are also compared with each other: a vector must not depend on its
batch-mates. Two vectors each within a cosine limit `c` of PyTorch's can be up to twice that angle
apart (1 - cos grows with the square of the angle), so the batch-invariance limit is 1 - 4(1 - c).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from bertx.architectures import reads_padding
from bertx.backends import Runner
from bertx.batching import DEFAULT_BATCH_TOKENS, plan
from bertx.manifest import Architecture, Pooling
from bertx.pooling import cosine_rows, pool
from bertx.tokenization import Batch, TextEncoder

BATCH_SIZE = 32  # `Model.encode`'s default


@dataclass(frozen=True)
class ProofSet:
    """The proof texts as token batches: the runtime's batches (with each row's text index) and each text alone."""

    texts: int
    tokens: int
    batches: tuple[Batch, ...]
    rows: tuple[np.ndarray, ...]
    singles: tuple[Batch, ...]


@dataclass(frozen=True)
class ProofMeasure:
    """One graph's pooled vectors against the reference, per text (in the proof set's text order)."""

    batched: np.ndarray  # cosine with the reference, embedded in the runtime's batches
    single: np.ndarray  # cosine with the reference, embedded alone (the batched one when not measured)
    invariance: np.ndarray  # cosine of a text's batched vector with its lone one
    nonfinite: bool
    alone_measured: bool = True  # False: it missed in batches, so the texts were not also run alone

    @property
    def cosine_min(self) -> float:
        """The worst text either way; -1 when anything was not finite."""
        if self.nonfinite:
            return -1.0
        return float(np.nan_to_num(min(self.batched.min(), self.single.min()), nan=-1.0))

    @property
    def cosine_mean(self) -> float:
        return float(np.nan_to_num(np.concatenate([self.batched, self.single]).mean(), nan=-1.0))

    @property
    def invariance_min(self) -> float:
        return float(np.nan_to_num(self.invariance.min(), nan=-1.0))

    @classmethod
    def compare(cls, batched: np.ndarray, single: np.ndarray | None, reference: np.ndarray) -> ProofMeasure:
        """Pooled vectors in text order, batched and alone (None: not run alone), against the reference's."""
        against = np.nan_to_num(cosine_rows(batched, reference), nan=-1.0)
        if single is None:
            nonfinite = not bool(np.isfinite(batched).all())
            return cls(against, against, np.ones_like(against), nonfinite, alone_measured=False)
        return cls(
            batched=against,
            single=np.nan_to_num(cosine_rows(single, reference), nan=-1.0),
            invariance=np.nan_to_num(cosine_rows(batched, single), nan=-1.0),
            nonfinite=not (bool(np.isfinite(batched).all()) and bool(np.isfinite(single).all())),
        )

    def meets(self, min_cosine: float) -> bool:
        """Every text, batched and alone, at `min_cosine` or closer to PyTorch, and batch-invariant."""
        measured = self.cosine_min >= min_cosine and self.invariance_min >= invariance_limit(min_cosine)
        return self.alone_measured and measured


def invariance_limit(min_cosine: float) -> float:
    """How close a text's batched and lone vectors must be when each is within `min_cosine` of PyTorch's."""
    return 1.0 - 4.0 * (1.0 - min_cosine)


def builtin_texts(name: str) -> list[str]:
    """The non-empty lines of a built-in text file (`exporter/data/NAME`)."""
    data = resources.files("bertx.exporter").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return [line for line in data.splitlines() if line.strip()]


def proof_texts() -> list[str]:
    """The built-in proof set: the parity sentences and the varied proof texts (never the calibration text)."""
    return list(dict.fromkeys(builtin_texts("parity_sentences.txt") + builtin_texts("proof_texts.txt")))


def build_proof(encoder: TextEncoder, texts: Sequence[str], architecture: Architecture) -> ProofSet:
    """Tokenize `texts` and cut them as `Model.encode` does by default (longest first, 2,048-token budget)."""
    encodings = encoder.encode(list(texts))
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    ratio = architecture.num_heads / (4 * architecture.hidden_size)
    batches, rows = [], []
    equal = reads_padding(architecture.model_type)
    for start, stop in plan(lengths[order], BATCH_SIZE, DEFAULT_BATCH_TOKENS, ratio, equal):
        rows.append(order[start:stop])
        batches.append(encoder.pad([encodings[i] for i in rows[-1]]))
    singles = tuple(encoder.pad([e]) for e in encodings)
    return ProofSet(len(encodings), int(lengths.sum()), tuple(batches), tuple(rows), singles)


def pooled(
    runner: Runner, batches: Sequence[Batch], input_names: Sequence[str], output: str, pooling: Pooling
) -> list[np.ndarray]:
    """Each batch's pooled `output`, in batch order."""
    return [pool(runner.run([output], b.feeds(input_names))[0], b.mask, pooling) for b in batches]


def in_text_order(proof: ProofSet, per_batch: Sequence[np.ndarray]) -> np.ndarray:
    """Batch rows put back in the proof set's text order."""
    out = np.empty((proof.texts, per_batch[0].shape[-1]), dtype=np.float32)
    for rows, values in zip(proof.rows, per_batch):
        out[rows] = values
    return out


def measure(
    runner: Runner,
    proof: ProofSet,
    reference: np.ndarray,
    input_names: Sequence[str],
    output: str,
    pooling: Pooling,
    stop_below: float | None = None,
) -> ProofMeasure:
    """`runner`'s pooled vectors on the proof set, batched as the runtime batches and alone, against `reference`.

    With `stop_below`, a graph whose batched vectors already miss that cosine is not run alone: it cannot
    pass, and the lone pass costs about as much again as the batched one.
    """
    batched = in_text_order(proof, pooled(runner, proof.batches, input_names, output, pooling))
    if stop_below is not None:
        missed = ProofMeasure.compare(batched, None, reference)
        if missed.nonfinite or missed.cosine_min < stop_below:
            return missed
    single = np.concatenate(pooled(runner, proof.singles, input_names, output, pooling))
    return ProofMeasure.compare(batched, single, reference)
