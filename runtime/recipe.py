"""`Recipe`: options resolved against one artifact, the canonical form of a request.

`EncodeOptions` says what a caller asked for; a `Recipe` says what the model will compute: defaults
filled in from the manifest, layers as indices, the prompt as its text, chunk settings checked against
the tokenizer. Two requests that mean the same thing give equal recipes (the server batches by them),
and every check that needs the artifact happens here, once, before any text is tokenized.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compact import check_truncate_dim
from .errors import OptionError
from .layers import Combine, check_combination, select_layers
from .manifest import Manifest, Pooling
from .options import CHUNKS, SENTENCE, TOKENS, WORDS, EncodeOptions
from .outputs import WordMerge
from .tokenization import TextEncoder

KINDS = (SENTENCE, TOKENS, WORDS, CHUNKS)
LATE_POOLINGS = (Pooling.MEAN, Pooling.MAX)  # how a chunk's tokens become its vector


@dataclass(frozen=True)
class Recipe:
    """What one call computes. Hashable; fields that mean nothing for its kind hold neutral values.

    Attributes:
        kind: sentence, tokens, words or chunks (late chunking: always windowed, whatever the text's length).
        layers: Hidden-state indices (0 = embeddings … L), in the order they are combined.
        chunked: Long texts are windowed (window, overlap) rather than truncated.
        chunk_size: Tokens per chunk of late chunking (None: a chunk per sentence).
        keep_end: Long texts are cut at their start (truncate_left) rather than at their end.
        prefix: The prompt text put before each single text ("" for none).
        hidden_prompt: Leading tokens pooling leaves out (the prompt's, for models pooled without it).
        width: The width of each vector before `truncate_dim`.
    """

    kind: str
    layers: tuple[int, ...]
    combine: Combine
    layer_weights: tuple[float, ...] | None
    chunked: bool
    window: int
    overlap: int
    width: int
    pooling: Pooling | None = None
    pool_before_combine: bool = False
    normalize: bool = False
    truncate_dim: int | None = None
    prefix: str = ""
    hidden_prompt: int = 0
    merge: WordMerge | None = None
    keep_end: bool = False
    chunk_size: int | None = None


def resolve(options: EncodeOptions, kind: str, manifest: Manifest, tokenizer: TextEncoder) -> Recipe:
    """The recipe for `options` on this artifact.

    Raises:
        OptionError: an option that does not fit the artifact (a layer out of range, an unknown prompt name,
            a window longer than the model's, a truncate_dim wider than the vector) or the output kind.
    """
    if kind not in KINDS:
        raise OptionError(f"unknown output kind {kind!r}: expected one of {', '.join(KINDS)}")
    options.check_kind(kind)
    num_layers = manifest.architecture.num_layers
    how, weights = options.combine, options.layer_weights
    if options.pooling is Pooling.FIRST_LAST_AVG:
        if options.layers is not None:
            raise OptionError("pooling='first_last_avg' chooses its own layers (1 and -1); leave layers unset")
        if how is not Combine.MEAN:
            raise OptionError("pooling='first_last_avg' averages layers 1 and -1; leave combine unset")
        layers: tuple[int, ...] = (1, num_layers)
    else:
        layers = select_layers(options.layer_spec(), num_layers)
    check_combination(how, weights, len(layers))
    if len(layers) == 1 and how is not Combine.WEIGHTED:
        how = Combine.MEAN  # one layer: every combination but a weighted one leaves it as it is
    chunked = options.long_texts.value == "chunk" or kind == CHUNKS
    window, overlap = tokenizer.windows(options.chunk_overlap, options.chunk_window) if chunked else (0, 0)
    width = manifest.architecture.hidden_size * (len(layers) if how is Combine.CONCAT else 1)
    common = {
        "kind": kind,
        "layers": layers,
        "combine": how,
        "layer_weights": weights,
        "chunked": chunked,
        "keep_end": options.long_texts.value == "truncate_left",
        "window": window,
        "overlap": overlap,
        "width": width,
    }
    if kind == TOKENS:
        return Recipe(**common)  # type: ignore[arg-type]
    if kind == WORDS:
        return Recipe(**common, merge=options.merge)  # type: ignore[arg-type]
    if kind == CHUNKS:
        pooling = Pooling.MEAN if options.pooling is None else options.pooling
        if pooling not in LATE_POOLINGS:
            raise OptionError(f"a chunk's vector pools its tokens by mean or max, not {pooling.value!r}")
        normalize = options.normalize_embeddings
        return Recipe(
            **common,  # type: ignore[arg-type]
            pooling=pooling,
            normalize=manifest.defaults.normalize if normalize is None else normalize,
            chunk_size=options.chunk_size,
        )
    check_truncate_dim(options.truncate_dim, width)
    prefix = manifest.prompts.resolve(options.prompt_name, options.prompt)
    if prefix and common["keep_end"]:
        raise OptionError(
            "long_texts='truncate_left' cuts a long text at its start, where the prompt is: use "
            "long_texts='truncate' or 'chunk' with a prompt (prompt='' turns a default prompt off)"
        )
    return Recipe(
        **common,  # type: ignore[arg-type]
        pooling=manifest.defaults.pooling if options.pooling is None else options.pooling,
        pool_before_combine=options.pool_before_combine and (len(layers) > 1 or how is Combine.WEIGHTED),
        normalize=manifest.defaults.normalize if options.normalize_embeddings is None else options.normalize_embeddings,
        truncate_dim=None if options.truncate_dim == width else options.truncate_dim,
        prefix=prefix,
        hidden_prompt=_prompt_tokens(prefix, chunked, manifest, tokenizer),
    )


def _prompt_tokens(prefix: str, chunked: bool, manifest: Manifest, tokenizer: TextEncoder) -> int:
    """How many leading tokens pooling leaves out: the prompt's, when the model was trained to pool
    without them (sentence-transformers' `include_prompt=False`), else none."""
    if not prefix or manifest.prompts.include_prompt:
        return 0
    if chunked:
        raise OptionError(
            "this model pools without its prompt's tokens, which only the first window of a chunked text "
            "holds: use long_texts='truncate' with a prompt"
        )
    (encoding,) = tokenizer.encode([prefix])
    # As sentence-transformers counts it: the prompt's tokens with [CLS], without the closing [SEP].
    count = len(encoding.ids) - (1 if encoding.special_tokens_mask[-1] else 0)
    if count >= tokenizer.max_length - 1:
        raise OptionError(f"the prompt takes {count} tokens and leaves no room for text in {tokenizer.max_length}")
    return count
