"""The one vocabulary of options: what to compute (`EncodeOptions`), each option defined once.

Python keywords, command-line options, HTTP fields and Ray job options are built from the same
definitions: their names, defaults, help and validation live here, and every front-end turns its own
syntax into an `EncodeOptions` and lets it refuse bad values. Checks that need the model (a layer index
in range, a prompt name it declares) happen once more against the artifact, in `bertx.recipe`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from .chunking import LongTexts
from .errors import OptionError
from .layers import NAMED_LAYERS, Combine, LayerSpec, parse_layers
from .manifest import Pooling
from .outputs import WordMerge

E = TypeVar("E", bound=Enum)

DEFAULT_CHUNK_OVERLAP = 32

# What each output kind reads: sentence vectors, token vectors, word vectors, and the vectors of a text's chunks
# pooled from its tokens embedded in the whole text's context (late chunking).
SENTENCE, TOKENS, WORDS, CHUNKS = "sentence", "tokens", "words", "chunks"


@dataclass(frozen=True)
class OptionSpec:
    """One option as every front-end shows it.

    Attributes:
        name: The Python keyword, the HTTP field and the Ray job key; the CLI flag is it with dashes.
        help: One line, for `--help`, the HTTP schema and the docs.
        kinds: The outputs it means something for (sentence, tokens, words).
        aliases: Other names accepted for it (another tool's name for the same thing).
        wire: Its type as JSON and the command line carry it (enums as their names, layers also as text).
        choices: Its fixed values, when it has them.
    """

    name: str
    help: str
    kinds: tuple[str, ...]
    wire: Any
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _values(kind: type[Enum]) -> tuple[str, ...]:
    return tuple(str(member.value) for member in kind)


_LAYERED = (SENTENCE, TOKENS, WORDS, CHUNKS)
SPECS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "pooling",
        "How token vectors become one sentence vector [the artifact's default; a chunk's: mean].",
        (SENTENCE, CHUNKS),
        str | None,
        choices=_values(Pooling),
    ),
    OptionSpec(
        "layers",
        'Hidden states: an index (-1: last layer, 0: embeddings), a list (-4,-3), a slice ("2:5"), '
        f"or one of {', '.join(NAMED_LAYERS)} [last].",
        _LAYERED,
        int | list[int] | str | None,
    ),
    OptionSpec("combine", "How several layers become one.", _LAYERED, str, choices=_values(Combine)),
    OptionSpec("layer_weights", "One weight per layer, for combine=weighted.", _LAYERED, list[float] | None),
    OptionSpec(
        "pool_before_combine",
        "Pool each layer first and combine the sentence vectors, instead of combining token vectors.",
        (SENTENCE,),
        bool,
    ),
    OptionSpec(
        "normalize_embeddings",
        "L2-normalize each sentence vector [the artifact's default].",
        (SENTENCE, CHUNKS),
        bool | None,
        aliases=("normalize",),
    ),
    OptionSpec(
        "long_texts",
        "Texts over max_seq_length: truncate (keep the start), truncate_left (keep the end), or chunk into "
        "overlapping windows combined into one result.",
        (SENTENCE, TOKENS, WORDS),
        str,
        choices=_values(LongTexts),
    ),
    OptionSpec("chunk_overlap", "Tokens each window repeats from the one before (chunk).", _LAYERED, int),
    OptionSpec(
        "chunk_window", "Tokens per window, special tokens included (chunk) [max_seq_length].", _LAYERED, int | None
    ),
    OptionSpec(
        "truncate_dim",
        "Keep the first N dimensions (Matryoshka); normalizing, when on, comes after the cut [all].",
        (SENTENCE,),
        int | None,
        aliases=("dimensions",),
    ),
    OptionSpec(
        "prompt_name", "Put the artifact's prompt of this name before each text [its default].", (SENTENCE,), str | None
    ),
    OptionSpec(
        "prompt", 'Put this text before each text instead ("" turns a default prompt off).', (SENTENCE,), str | None
    ),
    OptionSpec("merge", "How a word's sub-word pieces become one vector.", (WORDS,), str, choices=_values(WordMerge)),
    OptionSpec(
        "chunk_size",
        "Late chunking: tokens per chunk, pooled from the whole text's token vectors [one chunk per sentence].",
        (CHUNKS,),
        int | None,
    ),
)
SPEC: dict[str, OptionSpec] = {spec.name: spec for spec in SPECS}
ALIASES: dict[str, str] = {alias: spec.name for spec in SPECS for alias in spec.aliases}

# The options that say what a sentence vector is: what an embeddings file records and a corpus job takes.
SENTENCE_OPTIONS = tuple(spec.name for spec in SPECS if SENTENCE in spec.kinds)


@dataclass(frozen=True)
class EncodeOptions:
    """What to compute from each text: a frozen, hashable value, checked when it is made.

    Every field is canonical once built (enums as enums, layers as an int, a tuple or a name, weights as
    a tuple of floats), so two requests that mean the same thing compare equal. Defaults (None) mean "as
    the artifact says" and are resolved against it by `bertx.recipe.Recipe`.

    Example:
        >>> EncodeOptions(pooling="cls", layers="all")           # [CLS] of every layer, averaged
        >>> EncodeOptions.from_mapping({"layers": "-4,-3,-2,-1", "normalize": True})

    Raises:
        OptionError: a value of the wrong type, out of bounds or not among the choices; the message names
            the option and what it accepts.
    """

    pooling: Pooling | None = None
    layers: int | tuple[int, ...] | str | None = None
    combine: Combine = Combine.MEAN
    layer_weights: tuple[float, ...] | None = None
    pool_before_combine: bool = False
    normalize_embeddings: bool | None = None
    long_texts: LongTexts = LongTexts.TRUNCATE
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    chunk_window: int | None = None
    truncate_dim: int | None = None
    prompt_name: str | None = None
    prompt: str | None = None
    merge: WordMerge = WordMerge.MEAN
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        canonical: dict[str, Any] = {
            "pooling": None if self.pooling is None else choice(Pooling, self.pooling, "pooling"),
            "layers": canonical_layers(self.layers),
            "combine": choice(Combine, self.combine, "combine"),
            "layer_weights": _weights(self.layer_weights),
            "pool_before_combine": _flag(self.pool_before_combine, "pool_before_combine"),
            "normalize_embeddings": None
            if self.normalize_embeddings is None
            else _flag(self.normalize_embeddings, "normalize_embeddings"),
            "long_texts": choice(LongTexts, self.long_texts, "long_texts"),
            "chunk_overlap": _integer(self.chunk_overlap, "chunk_overlap", 0),
            "chunk_window": None if self.chunk_window is None else _integer(self.chunk_window, "chunk_window", 1),
            "truncate_dim": None if self.truncate_dim is None else _integer(self.truncate_dim, "truncate_dim", 1),
            "prompt_name": _text(self.prompt_name, "prompt_name"),
            "prompt": _text(self.prompt, "prompt"),
            "merge": choice(WordMerge, self.merge, "merge"),
            "chunk_size": None if self.chunk_size is None else _integer(self.chunk_size, "chunk_size", 1),
        }
        if canonical["prompt"] is not None and canonical["prompt_name"] is not None:
            raise OptionError("give prompt_name or prompt, not both")
        combine, weights = canonical["combine"], canonical["layer_weights"]
        if weights is not None and combine is not Combine.WEIGHTED:
            raise OptionError(f"layer_weights are only used with combine='weighted', not {combine.value!r}")
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], kind: str = SENTENCE) -> EncodeOptions:
        """Options from keyword-style values (a JSON object, a job's options): aliases are read as their option,
        None means the default, and an option that means nothing for `kind` is refused by name."""
        given: dict[str, Any] = {}
        for key, value in values.items():
            name = ALIASES.get(key, key)
            if name not in SPEC:
                raise OptionError(f"unknown option {key!r}: expected one of {', '.join(SPEC)}")
            if name in given:
                raise OptionError(f"{key!r} and {name!r} are the same option: give one of them")
            if value is not None:
                given[name] = value
        options = cls(**given)
        options.check_kind(kind)
        return options

    def check_kind(self, kind: str) -> None:
        """Raise `OptionError` if an option that means nothing for `kind` is set away from its default."""
        for spec in SPECS:
            if kind not in spec.kinds and getattr(self, spec.name) != DEFAULTS[spec.name]:
                kinds = " and ".join(spec.kinds)
                raise OptionError(f"{spec.name} applies to {kinds} vectors, not to {kind} vectors")

    def changed(self) -> dict[str, Any]:
        """The options set away from their defaults, JSON-ready (enums as their values)."""
        return {name: _plain(value) for name, value in self.to_dict().items() if value != _plain(DEFAULTS[name])}

    def to_dict(self) -> dict[str, Any]:
        """Every option, JSON-ready: what an embeddings file or a job record holds."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def layer_spec(self) -> LayerSpec | None:
        """The layers as `select_layers` takes them (a slice written "2:5" becomes a slice)."""
        if isinstance(self.layers, str) and self.layers not in NAMED_LAYERS:
            return parse_layers(self.layers)
        return self.layers


DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(EncodeOptions)}


def choice(kind: type[E], value: object, name: str) -> E:
    """Return `value` as a member of the str-Enum `kind`, or raise `OptionError` naming the choices."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(str(member.value) for member in kind)
        raise OptionError(f"unknown {name} {value!r}: expected one of {valid}") from None


def canonical_layers(value: object) -> int | tuple[int, ...] | str | None:
    """A layer request in one hashable, JSON-ready form: an index, a tuple of indices, a name, or a slice
    written as "start:stop[:step]". Text is read as the command line writes it ("-4,-3", "2:5")."""
    if value is None:
        return None
    if isinstance(value, str):
        return canonical_layers(parse_layers(value)) if value.strip() not in NAMED_LAYERS else value.strip()
    if isinstance(value, slice):
        parts = (value.start, value.stop, value.step)
        for part in parts:
            if part is not None and (isinstance(part, bool) or not isinstance(part, (int, np.integer))):
                raise OptionError(f"a layers slice takes integers, got {value}")
        if value.step == 0:
            raise OptionError("a layers slice cannot have step 0")
        shown = ["" if p is None else str(int(p)) for p in parts]
        return ":".join(shown[:2] if value.step is None else shown)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, Sequence) or isinstance(value, np.ndarray):
        items = list(value)
        if not items:
            raise OptionError("layers list is empty")
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
                raise OptionError(f"layer indices must be integers, got {item!r}")
        return tuple(int(item) for item in items)
    raise OptionError(
        f"unknown layers {value!r}: expected an index (-1), a list (-4,-3), a slice (2:5) or one of "
        f"{', '.join(NAMED_LAYERS)}"
    )


def _weights(value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise OptionError(f"layer_weights must be a list of numbers, got {value!r}")
    weights = []
    for item in list(value):
        if isinstance(item, bool) or not isinstance(item, (int, float, np.integer, np.floating)):
            raise OptionError(f"layer_weights must be numbers, got {item!r}")
        if not math.isfinite(float(item)) or abs(float(item)) > float(np.finfo(np.float32).max):
            raise OptionError(f"layer_weights must be finite float32 numbers, got {item!r}")
        weights.append(float(item))
    if not weights:
        raise OptionError("layer_weights is empty")
    return tuple(weights)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _integer(value: object, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise OptionError(f"{name} must be an integer of at least {least}, got {value!r}")
    return int(value)


def _text(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise OptionError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def options_table() -> str:
    """The docs' table of options, from their definitions: one row per option, its name on each front-end."""
    rows = [
        "| option | for | default | command line | HTTP field | what |",
        "|---|---|---|---|---|---|",
    ]
    for spec in SPECS:
        default = _plain(DEFAULTS[spec.name])
        if default is None:
            shown = "the artifact's" if spec.name in ("pooling", "normalize_embeddings") else "—"
        else:
            shown = f"`{str(default).lower() if isinstance(default, bool) else default}`"
        http = " / ".join(f"`{name}`" for name in (spec.name, *spec.aliases))
        what = spec.help + (f" One of {', '.join(spec.choices)}." if spec.choices else "")
        rows.append(f"| `{spec.name}` | {', '.join(spec.kinds)} | {shown} | `{spec.flag}` | {http} | {what} |")
    return "\n".join(rows)
