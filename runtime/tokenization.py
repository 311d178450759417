"""Tokenization with the artifact's `tokenizer.json`, and padded batches for onnxruntime.

A model's tokenizer.json may carry its own padding and truncation (the packaged all-MiniLM-L6-v2 pads
every text to 128 and cuts at 128 although its sentence-transformers config says 256). Loaded as-is
that silently truncates texts and multiplies the work, so bertx always sets both itself: truncation
at the manifest's max_seq_length, and padding to the longest text of each batch, done here in numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import ArtifactError, InputError, OptionError

# Tokenizer copies kept for chunking (one per window and overlap asked for), least recently used dropped.
WINDOWED_KEPT = 4

# One text, or a pair of texts (text_a, text_b) encoded together with segment ids, as BERT was trained
# for sentence-pair tasks.
TextInput = str | tuple[str, str]


@dataclass(frozen=True)
class Batch:
    """Padded int64 inputs for one onnxruntime call; `mask` is 1 on real tokens."""

    input_ids: np.ndarray
    mask: np.ndarray
    type_ids: np.ndarray

    def feeds(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The onnxruntime feed dict for the input names the model declares."""
        by_name = {"input_ids": self.input_ids, "attention_mask": self.mask, "token_type_ids": self.type_ids}
        return {name: by_name[name] for name in names}


class TextEncoder:
    """Turns texts into token ids with fixed truncation and no built-in padding.

    The underlying `tokenizers.Tokenizer` is configured once here and never changed afterwards, so
    one instance can be used from several threads.
    """

    def __init__(self, path: Path, max_length: int, pad_id: int) -> None:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise ArtifactError(f"cannot load tokenizer {path}: {exc}") from exc
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        self._specials = len(tokenizer.encode("", add_special_tokens=True).ids)
        self._windowed: dict[tuple[int, int], Tokenizer] = {}
        self._keeping_end: Tokenizer | None = None
        self._lock = threading.Lock()

    @property
    def vocab_size(self) -> int:
        """Number of entries in the vocabulary, added tokens included."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: Sequence[TextInput], keep_end: bool = False) -> list[Encoding]:
        """Tokenize texts or (text_a, text_b) pairs (special tokens added, truncated to `max_length`; a
        pair is cut from its longer side first). A text is cut at its end, or with `keep_end` at its start."""
        items = check_inputs(texts)
        return list(self._truncating(keep_end).encode_batch(items, add_special_tokens=True))

    def _truncating(self, keep_end: bool) -> Tokenizer:
        """The tokenizer that cuts at the end, or (a copy made once) the one that cuts at the start."""
        if not keep_end:
            return self._tokenizer
        with self._lock:
            if self._keeping_end is None:
                copy = Tokenizer.from_str(self._tokenizer.to_str())
                copy.no_padding()
                copy.enable_truncation(self.max_length, direction="left")
                self._keeping_end = copy
            return self._keeping_end

    def pad(self, encodings: Sequence[Encoding]) -> Batch:
        """Pad encodings to the longest of them."""
        width = max((len(e.ids) for e in encodings), default=0)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        return Batch(ids, mask, types)

    def windows(self, overlap: int, window: int | None = None) -> tuple[int, int]:
        """Check a window size (default max_length, special tokens included) and an overlap against this
        tokenizer; return (window, overlap).

        Raises:
            OptionError: either is out of range; the message gives the range for this model.
        """
        size = self.max_length if window is None else window
        if isinstance(size, bool) or not isinstance(size, int) or not self._specials + 2 <= size <= self.max_length:
            raise OptionError(
                f"chunk_window must be an integer from {self._specials + 2} to {self.max_length}, got {size!r}"
            )
        content = size - self._specials
        limit = max(content // 2, 1) - 1
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= limit:
            raise OptionError(
                f"chunk_overlap must be an integer from 0 to {limit} for windows of {size}, got {overlap!r}"
            )
        return size, overlap

    def encode_windows(self, texts: Sequence[str], overlap: int, window: int | None = None) -> list[Encoding]:
        """Tokenize texts into windows of `window` tokens (default max_length), special tokens included;
        each text's further windows are in `encoding.overflowing`, repeating `overlap` tokens."""
        check_texts(texts)
        size, overlap = self.windows(overlap, window)
        with self._lock:
            windowed = self._windowed.pop((size, overlap), None)
            if windowed is None:
                windowed = Tokenizer.from_str(self._tokenizer.to_str())
                windowed.no_padding()
                windowed.enable_truncation(size, stride=overlap)
            # The most recently used settings last; a bounded number kept (each is a tokenizer copy, MBs).
            self._windowed[(size, overlap)] = windowed
            while len(self._windowed) > WINDOWED_KEPT:
                self._windowed.pop(next(iter(self._windowed)))
        return list(windowed.encode_batch(list(texts), add_special_tokens=True))

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[Encoding]:
        """Tokens of each text (truncated to `max_length`), with or without the special tokens."""
        check_texts(texts)
        return list(self._tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """Text for each list of token ids."""
        return list(self._tokenizer.decode_batch([list(row) for row in ids], skip_special_tokens=skip_special_tokens))

    def encode_words(self, texts: Sequence[Sequence[str]], keep_end: bool = False) -> list[Encoding]:
        """Tokenize pre-split input: each text given as its list of words (cut at its end, or its start)."""
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InputError(f"expected a list of word lists, got {type(texts).__name__}")
        for index, words in enumerate(texts):
            check_texts(words, what=f"text {index}: ")
        return list(self._truncating(keep_end).encode_batch([list(w) for w in texts], is_pretokenized=True))


def is_truncated(encoding: Encoding) -> bool:
    """Whether the tokenizer cut tokens off this text."""
    return len(encoding.overflowing) > 0


def check_inputs(texts: object) -> list[TextInput]:
    """Check a list of texts and (text_a, text_b) pairs as `check_texts` checks texts; return them with
    every pair as a tuple, the form the tokenizer reads as a pair.

    Raises:
        InputError: naming the first item that is neither a str nor a pair of two str.
    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InputError(f"expected a list of strings or (text_a, text_b) pairs, got {type(texts).__name__}")
    items: list[TextInput] = []
    for index, item in enumerate(texts):
        if isinstance(item, str):
            _check_text(item, f"item {index}")
            items.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            _check_text(item[0], f"item {index} (text_a of a pair)")
            _check_text(item[1], f"item {index} (text_b of a pair)")
            items.append((item[0], item[1]))
        else:
            raise InputError(
                f"item {index} is {type(item).__name__}{_pair_hint(item)}; expected a str or a (text_a, text_b) pair"
            )
    return items


def is_pair(item: object) -> bool:
    """Whether an input item is a (text_a, text_b) pair rather than one text."""
    return isinstance(item, (tuple, list))


def _pair_hint(item: object) -> str:
    return f" of {len(item)} items" if isinstance(item, (tuple, list)) else ""


def check_texts(texts: object, what: str = "") -> None:
    """Raise `InputError` unless `texts` is a list or tuple of strings that are valid Unicode, naming the
    first bad item.

    Any str made of Unicode characters is embedded, whatever it holds (NUL, control and zero-width
    characters, text the tokenizer reduces to no tokens at all). A lone surrogate (`"\ud800"`, which a
    JSON client may send as an escape) is not a character: no UTF-8 encoding exists for it, so the
    tokenizer cannot read the text, and bertx refuses it rather than guess what was meant.
    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InputError(f"{what}expected a list of strings, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        _check_text(text, f"{what}item {index}")


def _check_text(text: object, name: str) -> None:
    if not isinstance(text, str):
        raise InputError(f"{name} is {type(text).__name__}, expected str")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"{name} is not valid Unicode: a lone surrogate {text[exc.start]!r} at character "
                f"{exc.start}; decode the source with errors='replace' (or fix the sender's JSON escapes)"
            ) from None
