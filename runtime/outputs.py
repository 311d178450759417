"""Typed results for token-level and word-level requests, and the merging of sub-word pieces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np


class TokenInfo(Protocol):
    """What the outputs need to know of a tokenized text: a tokenizers `Encoding` or stitched windows."""

    @property
    def ids(self) -> list[int]: ...
    @property
    def tokens(self) -> list[str]: ...
    @property
    def offsets(self) -> list[tuple[int, int]]: ...
    @property
    def special_tokens_mask(self) -> list[int]: ...
    @property
    def word_ids(self) -> list[int | None]: ...


class WordMerge(str, Enum):
    """How the sub-word pieces of one word become one vector."""

    MEAN = "mean"
    FIRST = "first"
    LAST = "last"
    MAX = "max"


@dataclass(frozen=True)
class TokenEmbeddings:
    """The token vectors of one text, padding removed.

    Attributes:
        text: The input text.
        tokens: Token strings, special tokens included.
        offsets: (start, end) character span of each token in `text`; (0, 0) for special tokens.
        special: True where the token is a special token ([CLS], [SEP], <s>, …).
        vectors: float32 array (len(tokens), dim).
    """

    text: str
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    special: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class WordEmbeddings:
    """The word vectors of one text: sub-word pieces merged, special tokens left out.

    Words are those of the tokenizer's pre-tokenizer (for BERT: split on whitespace and punctuation,
    so "don't" is three words), or the words given when the input was pre-split.

    Attributes:
        text: The input text (pre-split input: the words joined by single spaces).
        words: The text of each word.
        spans: (start, end) character span of each word in `text`.
        vectors: float32 array (len(words), dim).
    """

    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    vectors: np.ndarray


def token_embeddings(text: str, encoding: TokenInfo, vectors: np.ndarray) -> TokenEmbeddings:
    """Pair one text's unpadded token vectors with its tokens and offsets."""
    n = len(encoding.ids)
    return TokenEmbeddings(
        text=text,
        tokens=tuple(encoding.tokens),
        offsets=tuple((int(a), int(b)) for a, b in encoding.offsets),
        special=np.asarray(encoding.special_tokens_mask, dtype=bool),
        vectors=np.ascontiguousarray(vectors[:n], dtype=np.float32),
    )


def merge_words(
    text: str, encoding: TokenInfo, vectors: np.ndarray, how: WordMerge, words: Sequence[str] | None = None
) -> WordEmbeddings:
    """Merge one text's token vectors into word vectors using the tokenizer's word ids.

    With `words` (pre-split input) the word ids index that list, and token offsets are relative to
    each word; spans are then given in the words joined by single spaces.
    """
    groups: dict[int, list[int]] = {}
    for position, word in enumerate(encoding.word_ids):
        if word is not None and not encoding.special_tokens_mask[position]:
            groups.setdefault(word, []).append(position)
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]) if words else None
    names, spans, rows = [], [], []
    for word, positions in groups.items():
        if words is not None and starts is not None:
            start = int(starts[word])
            span = (start, start + len(words[word]))
            names.append(words[word])
        else:
            span = (encoding.offsets[positions[0]][0], encoding.offsets[positions[-1]][1])
            names.append(text[span[0] : span[1]])
        spans.append(span)
        pieces = vectors[positions]
        if how is WordMerge.MEAN:
            rows.append(pieces.mean(axis=0))
        elif how is WordMerge.FIRST:
            rows.append(pieces[0])
        elif how is WordMerge.LAST:
            rows.append(pieces[-1])
        else:
            rows.append(pieces.max(axis=0))
    dim = vectors.shape[-1]
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
    joined = " ".join(words) if words is not None else text
    return WordEmbeddings(text=joined, words=tuple(names), spans=tuple(spans), vectors=matrix)
