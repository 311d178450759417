"""Late chunking: a text embedded once, in its whole context, and its chunks pooled from its token vectors.

Chunk-then-embed gives each chunk only the words inside it; here every token is embedded with the whole text
around it (a text longer than the model's window is covered by overlapping windows whose token vectors are
stitched, each token once), and each chunk's vector pools the tokens that start inside its character span.
Chunks are the text's sentences, runs of `chunk_size` tokens, or spans the caller gives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, OptionError
from .layers import Combine, LayerSpec
from .manifest import Manifest, Pooling
from .options import CHUNKS, DEFAULT_CHUNK_OVERLAP, SPEC, EncodeOptions
from .outputs import TokenInfo
from .pooling import l2_normalize
from .recipe import resolve
from .tokenization import TextEncoder, check_texts

if TYPE_CHECKING:
    from .forward import Forward
    from .recipe import Recipe

Span = tuple[int, int]
# A sentence ends at . ! ? (or their full-width forms) and the closing quotes or brackets after them.
_SENTENCE_END = re.compile(r"[.!?。！？]+[\"'”’)\]]*(?=\s|$)|[。！？]+")


@dataclass(frozen=True)
class ChunkEmbeddings:
    """The chunks of one text and their vectors.

    Attributes:
        text: The input text.
        chunks: The text of each chunk (`text[start:end]`).
        spans: (start, end) character span of each chunk in `text`.
        vectors: float32 array (len(chunks), dim): each chunk's tokens pooled from the whole text's context.
    """

    text: str
    chunks: tuple[str, ...]
    spans: tuple[Span, ...]
    vectors: np.ndarray


class LateChunking:
    """What `Model` offers for late chunking."""

    manifest: Manifest
    forward: Forward

    def encode_chunks(
        self,
        texts: Sequence[str],
        spans: Sequence[Sequence[Sequence[int]]] | None = None,
        chunk_size: int | None = None,
        pooling: Pooling | str | None = None,
        normalize_embeddings: bool | None = None,
        layers: LayerSpec | None = None,
        combine: Combine | str = Combine.MEAN,
        layer_weights: Sequence[float] | None = None,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        chunk_window: int | None = None,
        batch_size: int = 32,
    ) -> list[ChunkEmbeddings]:
        """Late chunking: each text embedded once, in its whole context (overlapping windows stitched when it is
        longer than the model's window), and each of its chunks pooled from those token vectors.

        Example:
            >>> doc = model.encode_chunks(["Berlin is a city. It is the capital of Germany."])[0]
            >>> doc.chunks, doc.vectors.shape
            (('Berlin is a city.', 'It is the capital of Germany.'), (2, 384))

        Args:
            texts: The texts (documents).
            spans: Per text, the chunks as [start, end] character spans [its sentences, or `chunk_size` tokens].
            chunk_size: Tokens per chunk, when no spans are given [one chunk per sentence].
            pooling: mean (default) or max over a chunk's tokens.
            normalize_embeddings: L2-normalize each chunk's vector [the artifact's default].
            layers: Which hidden states, as in `encode`.
            combine: How several layers become one, as in `encode`.
            layer_weights: One weight per layer, for combine="weighted".
            chunk_overlap: Tokens each window repeats from the one before, for a text longer than the model's
                window.
            chunk_window: Tokens per window, special tokens included [max_seq_length].
            batch_size: Most texts a batch holds.
        """
        values = {n: v for n, v in locals().items() if n in SPEC}
        recipe = resolve(EncodeOptions.from_mapping(values, CHUNKS), CHUNKS, self.manifest, self.forward.tokenizer)
        if spans is None:
            return late_chunks(self.forward, texts, recipe, batch_size)
        if isinstance(texts, str) or len(spans) != len(texts):
            raise OptionError("spans gives one list of [start, end] pairs per text")
        return late_chunks(self.forward, list(zip(texts, spans)), recipe, batch_size)


def late_chunks(forward: Forward, items: Sequence[Any], recipe: Recipe, batch_size: int) -> list[ChunkEmbeddings]:
    """Chunk vectors for each item: a text, or a (text, spans) pair whose spans are the chunks.

    Raises:
        InputError: a span out of the text, empty, or holding no token.
    """
    texts = [item if isinstance(item, str) else item[0] for item in items]
    given = [None if isinstance(item, str) else item[1] for item in items]
    check_texts(texts)
    checked = [
        None if spans is None else check_spans(text, spans, i) for i, (text, spans) in enumerate(zip(texts, given))
    ]
    encodings = forward.tokenizer.encode_windows(texts, recipe.overlap, recipe.window)
    per_text = forward.token_vectors(encodings, batch_size, recipe)
    results = []
    for index, (text, spans, (info, vectors)) in enumerate(zip(texts, checked, per_text)):
        if spans is None:
            spans = token_spans(info, recipe.chunk_size) if recipe.chunk_size else sentence_spans(text)
        matrix = pool_spans(info, vectors, spans, recipe.pooling is Pooling.MAX, index)
        if recipe.normalize and len(matrix):
            matrix = l2_normalize(matrix)
        results.append(ChunkEmbeddings(text, tuple(text[a:b] for a, b in spans), tuple(spans), matrix))
    return results


def check_chunks(tokenizer: TextEncoder, texts: Sequence[str], spans: Sequence[Any], recipe: Recipe) -> list[Any]:
    """The items `late_chunks` takes, with each text's spans checked against the text and its tokens before
    anything runs (a server batches requests together: one request's bad span must not fail the others').

    Raises:
        InputError: naming the text and the first bad span.
    """
    checked = [check_spans(text, given, index) for index, (text, given) in enumerate(zip(texts, spans))]
    for index, encoding in enumerate(tokenizer.encode_windows(list(texts), recipe.overlap, recipe.window)):
        starts = np.unique(
            [
                start
                for window in (encoding, *encoding.overflowing)
                for (start, _), special in zip(window.offsets, window.special_tokens_mask)
                if not special
            ]
        )
        for a, b in checked[index]:
            first = int(np.searchsorted(starts, a))
            if first == len(starts) or starts[first] >= b:
                raise InputError(f"text {index}: the chunk at characters {a}…{b} holds no token")
    return list(zip(texts, checked))


def pool_spans(info: TokenInfo, vectors: np.ndarray, spans: Sequence[Span], use_max: bool, index: int) -> np.ndarray:
    """One vector per span: the mean (or max) of the text's tokens that start inside it, special tokens left out."""
    starts = np.array([start for start, _ in info.offsets], dtype=np.int64)
    content = ~np.asarray(info.special_tokens_mask, dtype=bool)
    rows = []
    for start, end in spans:
        member = content & (starts >= start) & (starts < end)
        if not member.any():
            raise InputError(f"text {index}: the chunk at characters {start}…{end} holds no token")
        tokens = vectors[member]
        rows.append(tokens.max(axis=0) if use_max else tokens.mean(axis=0))
    width = vectors.shape[1] if vectors.ndim == 2 else 0
    return np.asarray(np.stack(rows) if rows else np.zeros((0, width)), dtype=np.float32)


def sentence_spans(text: str) -> list[Span]:
    """The text's sentences, as character spans without their surrounding whitespace."""
    spans: list[Span] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    trimmed = [_trim(text, a, b) for a, b in spans]
    return [(a, b) for a, b in trimmed if b > a]


def token_spans(info: TokenInfo, size: int) -> list[Span]:
    """Runs of `size` consecutive content tokens, as character spans."""
    offsets = [offset for offset, special in zip(info.offsets, info.special_tokens_mask) if not special]
    return [(offsets[i][0], offsets[min(i + size, len(offsets)) - 1][1]) for i in range(0, len(offsets), size)]


def check_spans(text: str, spans: object, index: int) -> list[Span]:
    """Caller-given spans as (start, end) pairs of ints inside the text.

    Raises:
        InputError: naming the text and the first bad span.
    """
    if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence):
        raise InputError(f"text {index}: spans must be a list of [start, end] pairs, got {type(spans).__name__}")
    checked: list[Span] = []
    for span in spans:
        ok = isinstance(span, Sequence) and len(span) == 2 and all(type(x) is int for x in span)
        if not ok or not 0 <= span[0] < span[1] <= len(text):  # type: ignore[index]
            raise InputError(
                f"text {index}: span {span!r} is not a [start, end] pair with 0 <= start < end <= {len(text)}"
            )
        checked.append((int(span[0]), int(span[1])))  # type: ignore[index]
    return checked


def _trim(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
