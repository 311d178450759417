"""Which hidden states a request uses, and how several are combined into one.

Indices follow transformers' `hidden_states`: 0 is the embedding output, 1 … L the encoder layers,
and negative indices count from the end (-1 is the last layer, -2 the one before).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

from .errors import OptionError

LayerSpec = int | Sequence[int] | slice | str

NAMED_LAYERS = ("last", "last4", "all", "all+embeddings")


class Combine(str, Enum):
    """How the selected hidden states become one."""

    MEAN = "mean"
    SUM = "sum"
    CONCAT = "concat"
    WEIGHTED = "weighted"


def select_layers(spec: LayerSpec | None, num_layers: int) -> tuple[int, ...]:
    """Resolve a layer request to indices in 0 … num_layers (the manifest's outputs).

    Args:
        spec: An index, a list of indices, a slice over all hidden states, or one of
            "last", "last4", "all" (every encoder layer), "all+embeddings". None means "last".
        num_layers: The number of encoder layers L.

    Raises:
        OptionError: an index out of range, an empty selection, or an unknown name; the message
            lists what is valid.
    """
    count = num_layers + 1
    if spec is None or spec == "last":
        return (num_layers,)
    if isinstance(spec, str):
        named = {
            "last4": tuple(range(max(1, num_layers - 3), count)),
            "all": tuple(range(1, count)),
            "all+embeddings": tuple(range(count)),
        }
        if spec not in named:
            raise OptionError(f"unknown layers {spec!r}: expected an index, a list, a slice or one of {NAMED_LAYERS}")
        return named[spec]
    if isinstance(spec, slice):
        chosen = tuple(range(count)[spec])
        if not chosen:
            raise OptionError(f"layers slice {spec} selects nothing out of hidden states 0 … {num_layers}")
        return chosen
    items = [spec] if isinstance(spec, (int, np.integer)) else list(spec)
    if not items:
        raise OptionError("layers list is empty")
    chosen_list = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise OptionError(f"layer indices must be integers, got {item!r}")
        if not -count <= item < count:
            raise OptionError(
                f"layer {item} is out of range: this model has hidden states 0 (embeddings) … {num_layers}, "
                f"or -1 … -{count} from the end"
            )
        chosen_list.append(int(item) % count)
    return tuple(chosen_list)


def check_combination(how: Combine, weights: Sequence[float] | None, count: int) -> None:
    """Raise `OptionError` unless `weights` fit `how` for `count` layers."""
    if how is Combine.WEIGHTED:
        if weights is None or len(weights) != count:
            got = "none" if weights is None else len(weights)
            raise OptionError(f"weighted combination of {count} layers needs {count} layer_weights, got {got}")
    elif weights is not None:
        raise OptionError(f"layer_weights are only used with combine='weighted', not {how.value!r}")


def combine(states: Sequence[np.ndarray], how: Combine, weights: Sequence[float] | None = None) -> np.ndarray:
    """Combine equally shaped arrays (one per layer) along a new leading axis, or concatenate the last."""
    check_combination(how, weights, len(states))
    if len(states) == 1 and how is not Combine.WEIGHTED:
        return states[0]
    if how is Combine.CONCAT:
        return np.concatenate(states, axis=-1)
    stacked = np.stack(states, axis=0)
    if how is Combine.MEAN:
        return np.asarray(stacked.mean(axis=0, dtype=np.float32), dtype=np.float32)
    if how is Combine.SUM:
        return np.asarray(stacked.sum(axis=0, dtype=np.float32), dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32).reshape((-1,) + (1,) * (stacked.ndim - 1))
    return np.asarray((stacked * w).sum(axis=0), dtype=np.float32)


def parse_layers(text: str) -> LayerSpec:
    """Read a command-line layer request: "-1", "-4,-3,-2,-1", "2:5", "last4", "all", "all+embeddings"."""
    text = text.strip()
    if text in NAMED_LAYERS:
        return text
    try:
        if ":" in text:
            parts = [int(p) if p.strip() else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError(text)
            return slice(*parts)
        numbers = [int(p) for p in text.split(",")]
    except ValueError:
        raise OptionError(
            f"unknown layers {text!r}: expected an index (-1), a list (-4,-3), a slice (2:5) or one of "
            f"{', '.join(NAMED_LAYERS)}"
        ) from None
    return numbers[0] if len(numbers) == 1 else numbers
