"""Predictions of fine-tuned task heads: text (and text-pair) classification, word tagging, reranking.

The logits come from the artifact's head output; this module turns them into labels and scores the
way transformers' pipelines do: softmax for single-label heads, a sigmoid per label for multi-label
heads, raw scores for regression, and for a tagger the label of each word's first piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import HeadError, OptionError
from .manifest import Head, HeadKind, ProblemType
from .outputs import TokenInfo, WordMerge, merge_words


@dataclass(frozen=True)
class Classification:
    """The prediction for one text or text pair.

    Attributes:
        label: The best label.
        score: Its probability (softmax, or sigmoid for multi-label heads); for a regression head the
            raw score.
        labels: Every label predicted: the best one for single-label heads, each label whose sigmoid
            reaches the threshold for multi-label heads (possibly none).
        probabilities: One value per label, in the head's label order (`Model.labels`).
    """

    label: str
    score: float
    labels: tuple[str, ...]
    probabilities: np.ndarray

    def scores(self, names: Sequence[str]) -> dict[str, float]:
        """The probabilities by label name (pass `Model.labels`)."""
        return {name: float(p) for name, p in zip(names, self.probabilities)}


@dataclass(frozen=True)
class Entity:
    """Consecutive words tagged with the same entity type (B-X followed by I-X, or plain X repeated)."""

    label: str
    start: int
    end: int
    text: str
    score: float


@dataclass(frozen=True)
class Tagging:
    """A label per word of one text, from a token-classification head.

    Words are the tokenizer's pre-tokenizer words (as in `Model.encode_words`); each word takes the
    prediction of its first sub-word piece, the convention BERT taggers are trained with.

    Attributes:
        text: The input text.
        words: The text of each word.
        spans: (start, end) character span of each word in `text`.
        labels: The best label of each word.
        scores: Its probability, per word.
        probabilities: float32 (len(words), number of labels).
    """

    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    labels: tuple[str, ...]
    scores: np.ndarray
    probabilities: np.ndarray

    def entities(self, outside: str = "O") -> list[Entity]:
        """Group words into entities by their IOB2 labels (B-PER I-PER …); words labelled `outside` are
        left out, and labels without a B-/I- prefix group by repetition."""
        found: list[Entity] = []
        current: tuple[str, int, int, list[float]] | None = None
        for label, (start, end), score in zip(self.labels, self.spans, self.scores):
            prefix, _, kind = label.partition("-") if label[:2] in ("B-", "I-") else ("", "", label)
            continues = current is not None and current[0] == kind and prefix != "B"
            if current is not None and not continues:
                found.append(_entity(self.text, current))
                current = None
            if label == outside:
                continue
            if current is None:
                current = (kind, start, end, [float(score)])
            else:
                current = (kind, current[1], end, [*current[3], float(score)])
        if current is not None:
            found.append(_entity(self.text, current))
        return found


@dataclass(frozen=True)
class Ranked:
    """One document of a reranked list: its index in the input, its relevance score, and its text."""

    index: int
    score: float
    document: str


def require_head(head: Head | None, kind: HeadKind, task: str) -> Head:
    """The artifact's head, if it is of `kind`; else a `HeadError` that says what to export instead."""
    wanted = {
        HeadKind.SEQUENCE_CLASSIFICATION: "a fine-tuned …ForSequenceClassification checkpoint",
        HeadKind.TOKEN_CLASSIFICATION: "a fine-tuned …ForTokenClassification checkpoint",
    }[kind]
    if head is None:
        raise HeadError(
            f"{task} needs a task head, and this artifact was exported from a bare encoder; export {wanted} "
            "(its head is kept next to the hidden states)"
        )
    if head.kind is not kind:
        raise HeadError(f"{task} needs a {kind.value} head; this artifact's head is {head.kind.value}")
    return head


def probabilities(logits: np.ndarray, problem: ProblemType) -> np.ndarray:
    """Logits → per-label probabilities (softmax or sigmoid), or the raw scores of a regression head."""
    wide = np.asarray(logits, dtype=np.float64)
    if problem is ProblemType.REGRESSION:
        result = wide
    elif problem is ProblemType.MULTI_LABEL:
        result = 1.0 / (1.0 + np.exp(-wide))
    else:
        shifted = np.exp(wide - wide.max(axis=-1, keepdims=True))
        result = shifted / shifted.sum(axis=-1, keepdims=True)
    return np.asarray(result, dtype=np.float32)


def classify_rows(logits: np.ndarray, head: Head, multi_label: bool | None, threshold: float) -> list[Classification]:
    """One `Classification` per row of sequence-classification logits."""
    if not 0.0 <= threshold <= 1.0:
        raise OptionError(f"threshold must be between 0 and 1, got {threshold!r}")
    problem = head.problem_type
    if multi_label is not None:
        if problem is ProblemType.REGRESSION:
            raise OptionError("multi_label does not apply to a regression head (it predicts raw scores)")
        problem = ProblemType.MULTI_LABEL if multi_label else ProblemType.SINGLE_LABEL
    probs = probabilities(logits, problem)
    results = []
    for row in probs:
        best = int(row.argmax())
        if problem is ProblemType.MULTI_LABEL:
            chosen = tuple(head.labels[i] for i in np.flatnonzero(row >= threshold))
        else:
            chosen = (head.labels[best],)
        results.append(Classification(head.labels[best], float(row[best]), chosen, row))
    return results


def tag_words(text: str, encoding: TokenInfo, logits: np.ndarray, head: Head) -> Tagging:
    """Word labels for one text from its unpadded token logits (first piece of each word)."""
    words = merge_words(text, encoding, logits, WordMerge.FIRST)
    probs = probabilities(words.vectors, head.problem_type)
    best = probs.argmax(axis=-1) if len(probs) else np.zeros(0, dtype=np.int64)
    return Tagging(
        text=text,
        words=words.words,
        spans=words.spans,
        labels=tuple(head.labels[i] for i in best),
        scores=probs[np.arange(len(best)), best].astype(np.float32),
        probabilities=probs,
    )


def relevance(logits: np.ndarray, head: Head, label: str | None) -> np.ndarray:
    """A cross-encoder's relevance score per pair: the sigmoid of a one-column head (as sentence-transformers'
    CrossEncoder reports it), else the probability of `label` (default: the last label, "relevant" in the
    usual two-label layout)."""
    if logits.shape[-1] == 1:
        if label is not None and label != head.labels[0]:
            raise OptionError(f"this head has one output ({head.labels[0]!r}); label {label!r} does not exist")
        return (1.0 / (1.0 + np.exp(-logits[:, 0].astype(np.float64)))).astype(np.float32)
    name = head.labels[-1] if label is None else label
    if name not in head.labels:
        raise OptionError(f"unknown label {name!r}; this head's labels are {', '.join(head.labels)}")
    problem = ProblemType.MULTI_LABEL if head.problem_type is ProblemType.MULTI_LABEL else ProblemType.SINGLE_LABEL
    return probabilities(logits, problem)[:, head.labels.index(name)]


def ranked(scores: np.ndarray, documents: Sequence[str], top_k: int | None) -> list[Ranked]:
    """Documents by descending score (ties keep input order), the best `top_k` of them."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise OptionError(f"top_k must be a positive integer or None, got {top_k!r}")
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [Ranked(int(i), float(scores[i]), documents[i]) for i in order]


def _entity(text: str, current: tuple[str, int, int, list[float]]) -> Entity:
    kind, start, end, scores = current
    return Entity(kind, start, end, text[start:end], float(np.mean(scores)))
