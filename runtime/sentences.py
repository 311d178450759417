"""Sentence vectors: the forward pipeline's hidden states pooled, combined, cut and normalized as a
`Recipe` says."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .chunking import combine_pooled, split
from .forward import Forward
from .layers import combine as combine_states
from .manifest import Pooling
from .pooling import l2_normalize, pool
from .recipe import Recipe
from .tokenization import TextInput, check_inputs, is_pair


def sentence_vectors(
    forward: Forward, texts: Sequence[TextInput], recipe: Recipe, batch_size: int, progress: bool = False
) -> np.ndarray:
    """One float32 vector per text (or (text_a, text_b) pair, which gets no prompt)."""
    assert recipe.pooling is not None  # a sentence recipe always has one
    mode = recipe.pooling
    items = check_inputs(texts)
    pairs = any(map(is_pair, items))
    prefix = "" if pairs else recipe.prefix
    hidden_prompt = 0 if pairs else recipe.hidden_prompt
    if prefix:
        items = [prefix + text for text in items]  # type: ignore[operator]
    encodings = forward.tokenize(items, recipe)
    windows = split(encodings) if recipe.chunked else None
    flat = windows.encodings if windows is not None else encodings
    out = np.empty((len(flat), recipe.width), dtype=np.float32)
    for rows, batch, states in forward.states(flat, batch_size, recipe.layers, progress):
        mask = batch.mask
        if hidden_prompt:
            mask = mask.copy()
            mask[:, :hidden_prompt] = 0
        if recipe.pool_before_combine:
            out[rows] = combine_states([pool(h, mask, mode) for h in states], recipe.combine, recipe.layer_weights)
        else:
            out[rows] = pool(combine_states(states, recipe.combine, recipe.layer_weights), mask, mode)
    if windows is not None and items:
        counts = np.array([len(e.ids) for e in windows.encodings])
        use_max = mode is Pooling.MAX
        out = np.stack([combine_pooled(out[w], counts[w], use_max) for w in map(windows.of, range(len(items)))])
    if recipe.truncate_dim is not None:
        out = np.ascontiguousarray(out[:, : recipe.truncate_dim])
    return l2_normalize(out) if recipe.normalize else out
