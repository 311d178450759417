"""The one forward pipeline: tokenize → length-sorted token-budget batches → the requested outputs.

Sentence vectors, token and word vectors, task heads and the static-table builder all run through
`Forward`; what they do with the arrays it yields is post-processing. A NaN or infinity on a real token
is an error here, before any result is made from it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from tokenizers import Encoding

from .architectures import reads_padding
from .batching import plan
from .chunking import split, stitch
from .errors import NonFiniteError, OptionError, caller_stacklevel
from .layers import combine as combine_states
from .loading import Loaded
from .outputs import TokenInfo
from .progress import ProgressBar
from .recipe import Recipe
from .tokenization import Batch, TextInput

Rows = Iterator[tuple[np.ndarray, Batch, list[np.ndarray]]]


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's max_seq_length and were cut."""


class Forward:
    """Batches of an opened artifact through its runner; safe to share between threads (nothing changes
    after it is made)."""

    def __init__(self, loaded: Loaded, batch_tokens: int | None) -> None:
        self.loaded = loaded
        self.manifest = loaded.manifest
        self.tokenizer = loaded.tokenizer
        self.runner = loaded.runner
        self.batch_tokens = batch_tokens
        architecture = self.manifest.architecture
        # Attention scores per token (heads × width) against the feed-forward's 4 × hidden activations.
        self.attention_ratio = architecture.num_heads / (4 * architecture.hidden_size)
        self.equal_lengths = reads_padding(architecture.model_type)

    def tokenize(self, texts: Sequence[TextInput], recipe: Recipe | None = None) -> list[Encoding]:
        """Encodings of the texts: windows (in `overflowing`) for a chunked recipe, else truncated with one
        `TruncationWarning` saying how many were cut."""
        if recipe is not None and recipe.chunked:
            return self.tokenizer.encode_windows(texts, recipe.overlap, recipe.window)  # type: ignore[arg-type]
        encodings = self.tokenizer.encode(texts, keep_end=recipe is not None and recipe.keep_end)
        self.warn_truncated(encodings)
        return encodings

    def warn_truncated(self, encodings: Sequence[Encoding]) -> None:
        cut = sum(1 for e in encodings if e.overflowing)
        if cut:
            warnings.warn(
                f"{cut} of {len(encodings)} texts were longer than {self.tokenizer.max_length} tokens and were "
                "truncated",
                TruncationWarning,
                stacklevel=caller_stacklevel(),
            )

    def batches(self, encodings: Sequence[Encoding], batch_size: int, names: list[str], progress: bool = False) -> Rows:
        """Run length-sorted token-budget batches; yield each batch's rows (input positions), its padded
        inputs and the named outputs."""
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        return self.batched(
            lengths, lambda rows: self.tokenizer.pad([encodings[i] for i in rows]), batch_size, names, progress
        )

    def batched(
        self,
        lengths: np.ndarray,
        make: Callable[[np.ndarray], Batch],
        batch_size: int,
        names: list[str],
        progress: bool | str = False,
    ) -> Rows:
        """`batches` over inputs known by their token counts: `make` builds the padded batch of some rows
        (the static-table builder feeds vocabulary pieces this way, with no tokenizer). `progress` may name
        what is counted."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
        order = np.argsort(-lengths, kind="stable")
        bar = None
        if progress:
            bar = ProgressBar(len(lengths), label=progress) if isinstance(progress, str) else ProgressBar(len(lengths))
        try:
            plans = plan(lengths[order], batch_size, self.batch_tokens, self.attention_ratio, self.equal_lengths)
            for start, stop in plans:
                rows = order[start:stop]
                batch = make(rows)
                yield rows, batch, self.run(names, batch.feeds(self.manifest.inputs))
                if bar is not None:
                    bar.advance(len(rows))
        finally:
            if bar is not None:
                bar.close()

    def states(
        self, encodings: Sequence[Encoding], batch_size: int, layers: tuple[int, ...], progress: bool = False
    ) -> Rows:
        """`batches` of hidden states: only the states in `layers` are fetched, yielded in that order."""
        wanted = sorted(set(layers))
        names = [self.manifest.outputs[i] for i in wanted]
        for rows, batch, arrays in self.batches(encodings, batch_size, names, progress):
            fetched = dict(zip(wanted, arrays))
            yield rows, batch, [fetched[i] for i in layers]

    def token_vectors(
        self, encodings: Sequence[Encoding], batch_size: int, recipe: Recipe
    ) -> list[tuple[TokenInfo, np.ndarray]]:
        """Unpadded token vectors per text with the token facts that go with them (stitched when chunked)."""
        windows = split(encodings) if recipe.chunked else None
        flat = windows.encodings if windows is not None else list(encodings)
        matrices: list[np.ndarray] = [np.empty(0)] * len(flat)
        for rows, _, states in self.states(flat, batch_size, recipe.layers):
            merged = combine_states(states, recipe.combine, recipe.layer_weights)
            for j, row in enumerate(rows):
                matrices[row] = merged[j, : len(flat[row].ids)]
        if windows is None:
            return list(zip(encodings, matrices))
        results: list[tuple[TokenInfo, np.ndarray]] = []
        for text in range(len(encodings)):
            parts = windows.of(text)
            stitched = stitch([flat[w] for w in parts], [matrices[w] for w in parts], recipe.overlap)
            results.append((stitched, stitched.vectors))
        return results

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; a NaN or infinity on a real token is an error, never part of a result."""
        arrays = self.runner.run(names, feeds)
        for name, array in zip(names, arrays):
            if not np.isfinite(array).all() and not _finite_where_real(array, feeds.get("attention_mask")):
                texts = len(next(iter(feeds.values())))
                raise NonFiniteError(
                    f"the {self.loaded.variant.precision.value} variant on {self.runner.device.value} returned NaN "
                    f"or infinity in {name} for a batch of {texts} text(s) of {self.loaded.path.name}; no vector "
                    "was returned. Try another variant or device; with OpenVINO, deleting the artifact's ov-cache/ "
                    "forces a fresh compile"
                )
        return arrays


def _finite_where_real(array: np.ndarray, mask: np.ndarray | None) -> bool:
    """Whether a token-shaped output is finite on the real (unpadded) tokens; padding may hold anything."""
    if mask is None or array.shape[:2] != mask.shape:
        return False
    return bool(np.isfinite(array[mask.astype(bool)]).all())
