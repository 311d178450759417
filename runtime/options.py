"""Checking keyword values against their fixed choices, with errors that list the valid ones."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from .errors import OptionError

E = TypeVar("E", bound=Enum)

# The keywords of `Model.encode` that say what a sentence vector is (not how the work is batched): the names
# an embeddings file records and a corpus job takes, the same in Python, on the command line and over HTTP.
SENTENCE_OPTIONS = (
    "pooling",
    "layers",
    "combine",
    "layer_weights",
    "pool_before_combine",
    "normalize_embeddings",
    "long_texts",
    "chunk_overlap",
    "chunk_window",
    "truncate_dim",
    "prompt_name",
    "prompt",
)


def choice(kind: type[E], value: object, name: str) -> E:
    """Return `value` as a member of the str-Enum `kind`, or raise `OptionError` naming the choices."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(str(member.value) for member in kind)
        raise OptionError(f"unknown {name} {value!r}: expected one of {valid}") from None
