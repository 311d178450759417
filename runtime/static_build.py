"""Building a static word-vector table (`bertx vocab`) from a loaded artifact.

Piece vectors are made from batches built here in numpy: every vocabulary entry alone between the
tokenizer's own special tokens (`[CLS] id [SEP]`, `<s> id </s>`), one row each, all of length 3, so a
batch needs no padding and no tokenizer. Words that the vocabulary splits into pieces go through
`Model.encode_words`, one word a text, so they are embedded exactly as `Model.word_embedding` does.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from .errors import ArtifactError, InputError, OptionError
from .inputs import read_records
from .layers import Combine, LayerSpec
from .layers import combine as combine_states
from .options import WORDS, EncodeOptions
from .outputs import WordMerge
from .progress import ProgressBar
from .static import DTYPES, StaticEmbeddings, TableInfo, VectorDType, WordSplitter
from .tokenization import Batch, check_texts

if TYPE_CHECKING:
    from .model import Model


def build_table(
    model: Model,
    words: Iterable[str] | None = None,
    layers: LayerSpec | None = None,
    merge: WordMerge | str = WordMerge.MEAN,
    combine: Combine | str = Combine.MEAN,
    layer_weights: Sequence[float] | None = None,
    batch_size: int = 1024,
    dtype: VectorDType | str = "float32",
    progress: bool = False,
) -> StaticEmbeddings:
    """Embed every vocabulary entry alone, and each of `words` the vocabulary splits into pieces.

    Example:
        >>> model = bertx.Model.from_pretrained("models/all-MiniLM-L6-v2")
        >>> table = build_table(model, words=["riverbank", "unaffordable"])
        >>> table.save("minilm-words.npz")

    Args:
        model: A loaded artifact.
        words: Words to store with a vector of their own, each embedded alone with its pieces merged;
            words the vocabulary holds whole are left out (their piece vector is already theirs), as are
            repeats and blanks. A "word" the tokenizer splits into several words ("don't", "New York") is
            stored as the mean of them, reachable by `word_vector` (text never splits into it).
        layers: Hidden states to use, as `Model.encode` takes them [last].
        merge: How a word's pieces become one vector: mean, first, last or max.
        combine: How several layers become one: mean, sum, concat or weighted.
        layer_weights: One weight per layer for combine="weighted".
        batch_size: Vocabulary entries (or words) per inference call.
        dtype: float32 or float16, the type the vectors are stored in.
        progress: Show progress bars on standard error.

    Raises:
        OptionError: an invalid option. InputError: a word is not a str. ArtifactError: the tokenizer
            has no [CLS]-and-[SEP]-like pair of special tokens to put around a piece.
    """
    from . import __version__

    given = {"layers": layers, "combine": combine, "layer_weights": layer_weights, "merge": merge}
    options = EncodeOptions.from_mapping(given, WORDS)
    recipe = model.recipe(options, WORDS)
    chosen, how, how_merge = recipe.layers, recipe.combine, options.merge
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
    if dtype not in DTYPES:
        raise OptionError(f"unknown dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if isinstance(words, (str, bytes)):
        raise InputError(f"words must be a list of words, not one {type(words).__name__}")
    wanted = list(words) if words is not None else []
    check_texts(wanted, what="words: ")
    tokenizer_json = (model.path / model.manifest.tokenizer.file).read_text(encoding="utf-8")
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()  # a tokenizer.json may pad every text to a fixed length (see tokenization.py)
    tokenizer.no_truncation()
    pieces = _piece_vectors(model, tokenizer, chosen, how, recipe.layer_weights, batch_size, progress)
    entries = _multi_piece_words(tokenizer, wanted)
    vectors = np.zeros((len(entries), pieces.shape[1]), dtype=np.float32)
    bar = ProgressBar(len(entries), label="words") if progress and entries else None
    try:
        texts = list(entries.values())
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            results = model.encode_words(
                chunk, how_merge, batch_size, layers=list(chosen), combine=how, layer_weights=layer_weights
            )
            for row, result in enumerate(results, start=start):
                # As `Model.word_embedding`: a "word" the tokenizer splits into several is their mean.
                vectors[row] = result.vectors.mean(axis=0) if len(result.vectors) else 0.0
            if bar is not None:
                bar.advance(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    info = TableInfo(
        model_id=model.manifest.source.id,
        artifact=str(model.path.resolve()),
        variant=model.variant.precision.value,
        layers=chosen,
        combine=options.combine.value,
        layer_weights=None if layer_weights is None else tuple(float(w) for w in layer_weights),
        merge=how_merge.value,
        dtype="float16" if dtype == "float16" else "float32",
        bertx_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return StaticEmbeddings(pieces.astype(dtype), list(entries), vectors.astype(dtype), tokenizer_json, info)


def read_words(source: str | Path) -> list[str]:
    """The words of a file, one per line (blank lines skipped, surrounding spaces removed, repeats kept
    once); "-" reads standard input. A .jsonl or .csv file is read as `bertx embed --input` reads it
    (the `text` field or column).

    Raises:
        InputFileError: the file cannot be read or is not UTF-8 (the message names the line).
    """
    return list(dict.fromkeys(r.text.strip() for r in read_records(str(source)) if r.text.strip()))


def _specials(tokenizer: Tokenizer) -> tuple[int, int]:
    """The special tokens the tokenizer puts around a text ([CLS] … [SEP], <s> … </s>)."""
    around = tokenizer.encode("", add_special_tokens=True).ids
    if len(around) != 2:
        raise ArtifactError(
            f"the artifact's tokenizer adds {len(around)} special tokens to a text, not 2 (like [CLS] … [SEP]); "
            "bertx vocab does not know where a piece goes between them"
        )
    return int(around[0]), int(around[1])


def _piece_vectors(
    model: Model,
    tokenizer: Tokenizer,
    layers: tuple[int, ...],
    how: Combine,
    weights: Sequence[float] | None,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """One vector per vocabulary entry, each run alone as `[CLS] id [SEP]`; zero rows for special tokens."""
    first, last = _specials(tokenizer)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    special = set(tokenizer.get_added_tokens_decoder())
    ids = np.array([i for i in range(size) if i not in special], dtype=np.int64)
    width = model.hidden_size * (len(layers) if how is Combine.CONCAT else 1)
    vectors = np.zeros((size, width), dtype=np.float32)
    wanted = sorted(set(layers))
    names = [model.manifest.outputs[i] for i in wanted]
    unknown = set(model.manifest.inputs) - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown:
        raise ArtifactError(f"the model takes inputs {sorted(unknown)} that bertx vocab does not know how to fill")

    def make(rows: np.ndarray) -> Batch:
        input_ids = np.empty((len(rows), 3), dtype=np.int64)
        input_ids[:, 0], input_ids[:, 1], input_ids[:, 2] = first, ids[rows], last
        return Batch(input_ids, np.ones_like(input_ids), np.zeros_like(input_ids))

    lengths = np.full(len(ids), 3, dtype=np.int64)
    for rows, _, arrays in model.forward.batched(lengths, make, batch_size, names, "pieces" if progress else False):
        fetched = dict(zip(wanted, arrays))
        states = [np.asarray(fetched[i][:, 1, :], dtype=np.float32) for i in layers]
        vectors[ids[rows]] = combine_states(states, how, weights)
    return vectors


def _multi_piece_words(tokenizer: Tokenizer, words: list[str]) -> dict[str, str]:
    """Stored form → the word as given (the first of those with that form), for each word that is not a
    single vocabulary entry. The word as given is what gets embedded: for a byte-level tokenizer the
    stored form is already byte-mapped."""
    splitter = WordSplitter(tokenizer)
    entries: dict[str, str] = {}
    for word in words:
        split = splitter.split(word)
        if not split:
            continue  # blank, or nothing but characters the normalizer removes
        if len(split) == 1 and len(tokenizer.model.tokenize(split[0])) == 1:
            continue  # one vocabulary entry (or [UNK] alone): its piece vector is the word's
        entries.setdefault(splitter.key(word), word)
    return entries
