"""Long texts as overlapping windows: splitting, and putting token vectors back together.

The tokenizer cuts a long text into windows of `window` tokens (special tokens included) where each
window repeats the last `overlap` content tokens of the one before. Sentence vectors combine the
windows' pooled vectors weighted by their token counts; token and word outputs drop each window's
repeated tokens, so every token of the text appears exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from tokenizers import Encoding


class LongTexts(str, Enum):
    """What happens to texts longer than the window: cut to keep their start (`truncate`) or their end
    (`truncate_left`, tokens cut from the left as transformers' `truncation_side="left"` cuts them), or
    embedded in overlapping windows (`chunk`)."""

    TRUNCATE = "truncate"
    TRUNCATE_LEFT = "truncate_left"
    CHUNK = "chunk"


@dataclass(frozen=True)
class Windows:
    """All windows of a request, flat, and which text each belongs to (in order within a text)."""

    encodings: list[Encoding]
    owner: np.ndarray

    def of(self, text: int) -> np.ndarray:
        """Indices of the windows of one text, first to last."""
        return np.flatnonzero(self.owner == text)


def split(encodings: Sequence[Encoding]) -> Windows:
    """Flatten each encoding and its overflowing windows (as the tokenizer made them)."""
    flat: list[Encoding] = []
    owner: list[int] = []
    for index, encoding in enumerate(encodings):
        for window in [encoding, *encoding.overflowing]:
            flat.append(window)
            owner.append(index)
    return Windows(flat, np.asarray(owner, dtype=np.int64))


def combine_pooled(vectors: np.ndarray, counts: np.ndarray, use_max: bool) -> np.ndarray:
    """One vector from the pooled vectors of a text's windows: token-weighted mean, or max for max pooling."""
    if use_max:
        return np.asarray(vectors.max(axis=0), dtype=np.float32)
    weights = counts.astype(np.float32) / max(float(counts.sum()), 1.0)
    return np.asarray((vectors * weights[:, None]).sum(axis=0), dtype=np.float32)


@dataclass(frozen=True)
class Stitched:
    """A text's tokens over all its windows, each once."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    special_tokens_mask: list[int]
    word_ids: list[int | None]
    vectors: np.ndarray


def stitch(windows: Sequence[Encoding], vectors: Sequence[np.ndarray], overlap: int) -> Stitched:
    """Join the token vectors of consecutive windows, dropping the `overlap` tokens each repeats.

    The first window keeps its leading special token, the last its trailing one.
    """
    ids: list[int] = []
    tokens: list[str] = []
    offsets: list[tuple[int, int]] = []
    special: list[int] = []
    word_ids: list[int | None] = []
    rows: list[np.ndarray] = []
    last = len(windows) - 1
    for w, (encoding, matrix) in enumerate(zip(windows, vectors)):
        content = [i for i, s in enumerate(encoding.special_tokens_mask) if not s]
        keep = content[overlap:] if w > 0 else content
        if w == 0:
            keep = [i for i in range(content[0] if content else len(encoding.ids))] + keep
        if w == last:
            keep = keep + [i for i in range((content[-1] + 1) if content else len(encoding.ids), len(encoding.ids))]
        for i in keep:
            ids.append(encoding.ids[i])
            tokens.append(encoding.tokens[i])
            offsets.append((int(encoding.offsets[i][0]), int(encoding.offsets[i][1])))
            special.append(int(encoding.special_tokens_mask[i]))
            word_ids.append(encoding.word_ids[i])
            rows.append(matrix[i])
    dim = vectors[0].shape[-1] if len(vectors) else 0
    stacked = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
    return Stitched(ids, tokens, offsets, special, word_ids, stacked)
