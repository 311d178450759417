"""Static word vectors: a table made once with the encoder, then texts embedded with no inference at all.

Every vocabulary entry is run alone through the encoder (`[CLS] piece [SEP]`) and its vector kept; words
a list names that the vocabulary splits into several pieces get a vector of their own, each embedded
alone with its pieces merged. A text is then embedded by splitting it into words exactly as the model's
tokenizer does, looking each word up (a stored word, else the mean of its pieces' vectors) and averaging
the words: numpy and the `tokenizers` library only, thousands of texts a second, at a cost in quality
that `bench/static_quality.py` measures.

The table is one .npz holding the vectors, the words, the artifact's tokenizer.json and the settings
that made it, so it is used without the artifact. Building it lives in `bertx.static_build`.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from .embedding_files import atomic_write
from .errors import InputError, InputFileError
from .pooling import l2_normalize
from .tokenization import check_texts

FORMAT = "bertx.static"
SCHEMA_VERSION = 1
VectorDType = Literal["float32", "float16"]
DTYPES: tuple[VectorDType, ...] = ("float32", "float16")
_ARRAYS = ("piece_vectors", "words", "word_vectors", "tokenizer", "meta")
# Words seen by `encode` keep their rows here; a long-running process over open-ended text would
# otherwise grow the cache without bound, so it is emptied when it reaches this size.
_CACHE_LIMIT = 1 << 18


@dataclass(frozen=True)
class TableInfo:
    """How a static table was made (stored as JSON in the table's `meta`).

    Attributes:
        model_id: The artifact's source model id (its manifest's `source.id`).
        artifact: The artifact folder the table was built from.
        variant: The precision variant that ran (fp32, int8, …).
        layers: Hidden-state indices combined (0 = embeddings … L = last layer).
        combine: How the layers were combined (mean, sum, concat, weighted).
        layer_weights: The weights of combine="weighted", else None.
        merge: How a stored word's pieces were merged (mean, first, last, max).
        dtype: Float type the vectors are stored in.
        bertx_version: The bertx that wrote the table.
        created: When, as an ISO 8601 UTC time.
    """

    model_id: str
    artifact: str
    variant: str
    layers: tuple[int, ...]
    combine: str
    layer_weights: tuple[float, ...] | None
    merge: str
    dtype: VectorDType
    bertx_version: str
    created: str
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """The JSON text stored in the table, marked with the format name."""
        return json.dumps({"format": FORMAT, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> TableInfo:
        """Read `to_json`'s text; raises ValueError, KeyError or TypeError when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ValueError(f"its meta does not say format {FORMAT!r}")
        if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
            version = data["schema_version"]
            raise ValueError(f"it has schema version {version}; this bertx reads up to {SCHEMA_VERSION}, upgrade bertx")
        data["layers"] = tuple(int(i) for i in data["layers"])
        weights = data.get("layer_weights")
        data["layer_weights"] = None if weights is None else tuple(float(w) for w in weights)
        return cls(**data)


class WordSplitter:
    """Splits text into words as a tokenizer does (its normalizer, then its pre-tokenizer), and names the
    form a word is stored under in a table."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._normalizer = tokenizer.normalizer
        self._pre_tokenizer = tokenizer.pre_tokenizer

    def normalize(self, text: str) -> str:
        """The text as the tokenizer's normalizer leaves it (for BERT uncased: lowercased, accents and
        control characters handled, spaces around CJK characters)."""
        return self._normalizer.normalize_str(text) if self._normalizer is not None else text

    def split(self, text: str) -> list[str]:
        """The words of a text as the tokenizer sees them before cutting them into pieces."""
        normalized = self.normalize(text)
        if self._pre_tokenizer is None:
            return normalized.split()
        return [word for word, _ in self._pre_tokenizer.pre_tokenize_str(normalized) if word]

    def key(self, word: str) -> str:
        """The form a word is stored under: its one pre-tokenized word, or for a phrase ("don't", "new
        york") its normalized text with single spaces."""
        split = self.split(word)
        return split[0] if len(split) == 1 else " ".join(self.normalize(word).split())


class StaticEmbeddings:
    """A static word-vector table: embeds texts by averaging word vectors, with no inference session.

    Example:
        >>> table = bertx.StaticEmbeddings.load("minilm-words.npz")
        >>> vectors = table.encode(["A man is eating food.", "A cat sleeps."])
        >>> vectors.shape
        (2, 384)

    Words are those of the model's tokenizer: its normalizer (for BERT uncased: lowercase, accents and
    control characters handled as BERT does) then its pre-tokenizer (for BERT: whitespace and punctuation
    split off, so "don't" is three words). A word stored in the table has its own vector; any other word
    gets the mean of its sub-word pieces' vectors. A table holds no vectors for special tokens, so a word
    the vocabulary spells only as [UNK] is left out of the average. The object never changes after
    loading apart from caches of looked-up words, so it may be shared between threads.
    """

    def __init__(
        self,
        piece_vectors: np.ndarray,
        words: Sequence[str],
        word_vectors: np.ndarray,
        tokenizer_json: str,
        info: TableInfo,
    ) -> None:
        """Assemble a table from its parts (`build_table` and `load` call this; the arrays are checked)."""
        pieces = np.asarray(piece_vectors)
        stored = np.asarray(word_vectors)
        if pieces.ndim != 2 or stored.ndim != 2 or stored.shape[1] != pieces.shape[1]:
            raise ValueError(f"vectors of shapes {pieces.shape} and {stored.shape} do not form one table")
        if len(words) != len(stored):
            raise ValueError(f"{len(words)} words but {len(stored)} word vectors")
        if info.dtype not in DTYPES or pieces.dtype.name != info.dtype or stored.dtype.name != info.dtype:
            raise ValueError(f"vectors are {pieces.dtype} / {stored.dtype} but the table says {info.dtype}")
        try:
            tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # tokenizers raises a bare Exception for an unreadable tokenizer.json
            raise ValueError(f"its tokenizer cannot be read ({exc})") from exc
        if tokenizer.get_vocab_size(with_added_tokens=True) != len(pieces):
            raise ValueError(
                f"{len(pieces)} piece vectors but the tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} "
                "entries"
            )
        self.info = info
        self._tokenizer_json = tokenizer_json
        self._words = tuple(str(w) for w in words)
        self._splitter = WordSplitter(tokenizer)
        self._model = tokenizer.model
        self._vocab = tokenizer.get_vocab(with_added_tokens=True)
        # Special tokens ([CLS], [UNK], <s>, …) have no vector of their own: they are never looked up.
        self._special = frozenset(int(i) for i in tokenizer.get_added_tokens_decoder())
        # One float32 matrix, pieces then stored words: a float16 table is widened once here, and saved back
        # exactly (every float16 value is a float32 value).
        self._matrix = np.vstack([pieces, stored]).astype(np.float32, copy=False)
        self._pieces = len(pieces)
        self._word_rows = {word: len(pieces) + row for row, word in enumerate(self._words)}
        self._cache: dict[str, tuple[int, ...]] = {}
        self._whole_words: tuple[str, ...] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StaticEmbeddings:
        """Read a table written by `bertx vocab` or `StaticEmbeddings.save`.

        Raises:
            InputFileError: the file is missing, unreadable, not a static table, or inconsistent; the
                message says which.
        """
        what = f"static table {os.fspath(path)}"
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("it is a single .npy array, not an .npz")
            with data:
                missing = [name for name in _ARRAYS if name not in data.files]
                if missing:
                    raise KeyError(f"it lacks {', '.join(missing)}")
                arrays = {name: data[name] for name in _ARRAYS}
            info = TableInfo.from_json(str(arrays["meta"]))
            words = [str(w) for w in arrays["words"]]
            return cls(arrays["piece_vectors"], words, arrays["word_vectors"], str(arrays["tokenizer"]), info)
        except FileNotFoundError:
            raise InputFileError(f"{what} does not exist; build one with `bertx vocab ARTIFACT -o FILE.npz`") from None
        except OSError as exc:
            raise InputFileError(f"cannot read {what}: {exc.strerror or exc}") from exc
        except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise InputFileError(
                f"{what} is not a usable bertx static table ({exc}); rebuild it with `bertx vocab`"
            ) from exc

    from_file = load

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as one .npz, atomically: a temporary file beside `path` is renamed into place
        only when it is complete, so a failure or Ctrl-C leaves no half-written table (an existing file
        at `path` is replaced).

        Raises:
            InputFileError: the folder cannot be written.
        """
        with atomic_write(path, binary=True) as out:
            np.savez(
                out,
                piece_vectors=self._matrix[: self.pieces].astype(self.info.dtype),
                words=np.array(self._words, dtype=str),
                word_vectors=self._matrix[self.pieces :].astype(self.info.dtype),
                tokenizer=np.array(self._tokenizer_json),
                meta=np.array(self.info.to_json()),
            )

    @property
    def dim(self) -> int:
        """Width of every vector."""
        return int(self._matrix.shape[1])

    @property
    def pieces(self) -> int:
        """Number of vocabulary entries (special tokens included, though they have no vector)."""
        return self._pieces

    @property
    def stored_words(self) -> tuple[str, ...]:
        """The words stored with a vector of their own (`--words`), in the table's normalized form."""
        return self._words

    @property
    def words(self) -> tuple[str, ...]:
        """Every word with a vector of its own, in normalized form: the vocabulary entries that are whole
        words by themselves ("apple"; not "##ing", not [CLS]), then the stored words."""
        if self._whole_words is None:
            whole = [
                token
                for token, piece in sorted(self._vocab.items(), key=lambda item: item[1])
                if piece not in self._special
                and token not in self._word_rows
                and self._splitter.split(token) == [token]
                and self._piece_ids(token) == (piece,)
            ]
            self._whole_words = (*whole, *self._words)
        return self._whole_words

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        """Whether `word` (normalized as the tokenizer does) has a vector of its own, rather than one
        averaged from its pieces."""
        if not isinstance(word, str):
            return False
        if self._splitter.key(word) in self._word_rows:
            return True
        split = self._splitter.split(word)
        pieces = self._model.tokenize(split[0]) if len(split) == 1 else []
        return len(pieces) == 1 and pieces[0].id not in self._special

    def word_vector(self, word: str) -> np.ndarray:
        """The float32 vector of one word: its own if stored, else the mean of its pieces' vectors. A
        "word" the tokenizer splits into several words gets the mean of theirs.

        Raises:
            InputError: `word` is not a non-empty string, or the vocabulary has no pieces for it (only [UNK]).
        """
        if not isinstance(word, str) or not word.strip():
            raise InputError(f"word_vector needs a non-empty string, got {word!r}")
        check_texts([word])
        row = self._word_rows.get(self._splitter.key(word))
        if row is not None:
            return np.array(self._matrix[row], dtype=np.float32)
        vector = self._mean_of_words(self._splitter.split(word))
        if vector is None:
            raise InputError(f"{word!r} has no vector: the vocabulary spells it only with special tokens ([UNK])")
        return vector

    def encode(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Embed texts as the mean of their words' vectors.

        Args:
            texts: The texts; an empty list gives an array of shape (0, dim).
            normalize: L2-normalize each vector (default True).

        Returns:
            A float32 array (len(texts), dim). A text with no words the table can look up (empty,
            whitespace only, or only characters the vocabulary spells as [UNK]) gets a zero vector.

        Raises:
            InputError: `texts` is not a list of strings (the message names the bad item).
        """
        check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for index, text in enumerate(texts):
            vector = self._mean_of_words(self._splitter.split(text))
            if vector is not None:
                out[index] = vector
        return l2_normalize(out) if normalize else out

    def _mean_of_words(self, words: list[str]) -> np.ndarray | None:
        """The mean over words of (each word's own vector, or the mean of its pieces), as one weighted sum."""
        groups = [rows for rows in map(self._rows, words) if rows]
        if not groups:
            return None
        rows: list[int] = []
        weights: list[float] = []
        for group in groups:
            rows.extend(group)
            weights.extend([1.0 / len(group)] * len(group))
        scale = np.asarray(weights, dtype=np.float32) / np.float32(len(groups))
        return np.asarray(scale @ self._matrix[rows], dtype=np.float32)

    def _rows(self, word: str) -> tuple[int, ...]:
        """Rows of `_matrix` whose mean is the word's vector: its own row, or its pieces' rows."""
        rows = self._cache.get(word)
        if rows is None:
            own = self._word_rows.get(word)
            rows = (own,) if own is not None else self._piece_ids(word)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = rows
        return rows

    def _piece_ids(self, word: str) -> tuple[int, ...]:
        """The vocabulary pieces of one pre-tokenized word, special tokens left out."""
        return tuple(token.id for token in self._model.tokenize(word) if token.id not in self._special)

    def __repr__(self) -> str:
        return (
            f"StaticEmbeddings(model_id={self.info.model_id!r}, pieces={self.pieces}, "
            f"stored_words={len(self._words)}, dim={self.dim}, dtype={self.info.dtype!r})"
        )
