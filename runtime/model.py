"""`Model`: a loaded artifact that turns texts into sentence, token and word vectors, with no torch.

A facade: loading is `bertx.loading`, the batches `bertx.forward`, what a request means `bertx.options`
and `bertx.recipe`, the outputs `bertx.sentences` and `bertx.outputs`, the task heads `bertx.heads`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Runner
from .batching import DEFAULT_BATCH_TOKENS
from .chunking import LongTexts
from .errors import InputError, OptionError
from .forward import Forward, TruncationWarning
from .heads import TaskHeads
from .late_chunking import ChunkEmbeddings, LateChunking, late_chunks
from .layers import Combine, LayerSpec
from .loading import LoadOptions, load_artifact
from .manifest import Pooling, Precision
from .options import CHUNKS, DEFAULT_CHUNK_OVERLAP, SENTENCE, SPEC, TOKENS, WORDS, EncodeOptions
from .outputs import TokenEmbeddings, WordEmbeddings, WordMerge, merge_words, token_embeddings
from .prompts import DOCUMENT_NAMES, QUERY_NAMES
from .recipe import Recipe, resolve
from .sentences import sentence_vectors
from .session import Device
from .tokenization import TextInput, check_inputs, is_pair

__all__ = ["Model", "TruncationWarning"]


class Model(TaskHeads, LateChunking):
    """An exported bertx artifact, ready to embed.

    Example:
        >>> import bertx
        >>> model = bertx.Model.from_pretrained("models/all-MiniLM-L6-v2", variant="int8")
        >>> vectors = model.embed(["A man is eating food.", "A cat sleeps."])
        >>> vectors.shape
        (2, 384)

    A `Model` holds one inference session (onnxruntime, or OpenVINO) and one tokenizer, neither of
    which changes after loading, so the same instance may be used from several threads at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        variant: Precision | str = Precision.FP32,
        device: Device | str | None = None,
        threads: int | None = None,
        allow_fallback: bool = False,
        max_batch_size: int = 32,
        cpu_arena: bool = True,
        batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
        verify: bool = True,
    ) -> None:
        """See `from_pretrained`."""
        options = LoadOptions(variant, device, threads, allow_fallback, max_batch_size, cpu_arena, batch_tokens, verify)
        self.load_options = options
        self.forward = Forward(load_artifact(path, options), options.batch_tokens)
        self.path = Path(path)
        self.manifest = self.forward.manifest
        self.variant = self.forward.loaded.variant
        self.tokenizer = self.forward.tokenizer
        self.device = self.runner.device

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **options: Any) -> Model:
        """Load an artifact folder written by `bertx export`.

        Args:
            path: The artifact folder (it holds bertx.json).
            **options: The fields of `LoadOptions`, as keywords:

                - `variant`: fp32 (default), int8, fp16, bf16, or auto: the variant the export measured
                  fastest at its target accuracy on the exporting CPU (`bertx info` shows it), or the next
                  one where this CPU or installation cannot run it (a `FallbackWarning` says why).
                - `device`: "cpu" (onnxruntime), "cuda", "tensorrt", "openvino" (extra `bertx[openvino]`),
                  or "auto" (CUDA when available, else CPU). Default: the engine the variant was built
                  for (the manifest's `backend`: OpenVINO for bf16 and for an INT8 variant made by NNCF).
                - `threads`: inference threads; default: the CPUs this process may use (affinity, cgroup
                  quota) when it is restricted, else the engine's own choice.
                - `allow_fallback`: run on the CPU with a warning when CUDA is asked for but unavailable,
                  instead of raising `ProviderError`.
                - `max_batch_size`: the largest batch the TensorRT engine profile allows.
                - `cpu_arena`: keep onnxruntime's CPU memory arena (faster); False returns memory between
                  calls.
                - `batch_tokens`: padded tokens per batch, long texts counting extra for their attention;
                  a batch holds as many texts as fit, at least one and at most the call's `batch_size`.
                  This bounds the working memory whatever the text lengths. None batches by `batch_size`
                  only.
                - `verify`: check each model file's sha256 against the manifest before loading it (a
                  corrupted file of the right size would otherwise load and give wrong vectors).
        """
        return cls(path, **options)

    @classmethod
    def load(cls, path: str | os.PathLike[str], options: LoadOptions) -> Model:
        """Load with a `LoadOptions` value, as the command line, the server and the Ray job do."""
        return cls(path, **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})

    @property
    def runner(self) -> Runner:
        """The opened graph (an onnxruntime session or an OpenVINO compiled model behind one interface)."""
        return self.forward.runner

    @runner.setter
    def runner(self, runner: Runner) -> None:
        self.forward = Forward(dataclasses.replace(self.forward.loaded, runner=runner), self.batch_tokens)

    @property
    def batch_tokens(self) -> int | None:
        """Padded tokens per batch (None: batches by text count only)."""
        return self.forward.batch_tokens

    @batch_tokens.setter
    def batch_tokens(self, value: int | None) -> None:
        options = dataclasses.replace(self.load_options, batch_tokens=value)
        self.load_options = options
        self.forward = Forward(self.forward.loaded, options.batch_tokens)

    @property
    def hidden_size(self) -> int:
        """Width of every embedding this model returns."""
        return self.manifest.architecture.hidden_size

    @property
    def max_seq_length(self) -> int:
        """Texts are truncated to this many tokens, special tokens included."""
        return self.tokenizer.max_length

    def recipe(self, options: EncodeOptions, kind: str = SENTENCE) -> Recipe:
        """What `options` compute on this artifact for `kind` (sentence, tokens or words): the canonical
        form two equivalent requests share. Raises `OptionError` for options that do not fit the artifact."""
        return resolve(options, kind, self.manifest, self.tokenizer)

    def compute(
        self, texts: Sequence[Any], recipe: Recipe, batch_size: int = 32, progress: bool = False
    ) -> np.ndarray | list[TokenEmbeddings] | list[WordEmbeddings] | list[ChunkEmbeddings]:
        """Run a recipe: an (n, width) float32 array for sentence vectors, else token, word or chunk vectors per
        text (for chunks, an item may be a (text, spans) pair)."""
        if recipe.kind == SENTENCE:
            return sentence_vectors(self.forward, texts, recipe, batch_size, progress)
        if recipe.kind == CHUNKS:
            return late_chunks(self.forward, texts, recipe, batch_size)
        if recipe.kind == TOKENS:
            per_text = self.forward.token_vectors(self.forward.tokenize(texts, recipe), batch_size, recipe)
            return [token_embeddings(text, info, vectors) for text, (info, vectors) in zip(texts, per_text)]
        return self._words(texts, recipe, batch_size)

    def embed(
        self,
        texts: Sequence[TextInput],
        pooling: Pooling | str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
        prompt_name: str | None = None,
        **options: Any,
    ) -> np.ndarray:
        """Embed texts into one float32 vector each, from the last layer.

        Args:
            texts: The texts, or (text_a, text_b) pairs (encoded together, with segment ids); an empty
                list gives an array of shape (0, hidden_size).
            pooling: cls, mean, max, mean_sqrt_len or first_last_avg; default from the manifest.
            normalize: L2-normalize each vector; default from the manifest (`normalize_embeddings` is
                the same option).
            batch_size: Most texts per inference call; fewer when long texts fill the model's
                `batch_tokens` budget. Texts are sorted by length inside the call so that batches carry
                little padding; the result keeps the input order.
            prompt_name: One of the artifact's prompts (`model.prompts`) to put before each text;
                default: the artifact's default prompt, if it has one.
            **options: Any other option of `encode` (layers, combine, truncate_dim, prompt, …).

        Returns:
            A float32 array of shape (len(texts), hidden_size).

        Raises:
            InputError: `texts` is not a list of strings (the message names the bad item).
        """
        check_inputs(texts)
        chosen = EncodeOptions.from_mapping(
            {"pooling": pooling, "normalize": normalize, "prompt_name": prompt_name, **options}
        )
        return np.asarray(self._sentences(texts, chosen, batch_size, False))

    def encode(
        self,
        sentences: str | Sequence[TextInput],
        batch_size: int = 32,
        pooling: Pooling | str | None = None,
        layers: LayerSpec | None = None,
        combine: Combine | str = Combine.MEAN,
        layer_weights: Sequence[float] | None = None,
        pool_before_combine: bool = False,
        normalize_embeddings: bool | None = None,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        long_texts: LongTexts | str = LongTexts.TRUNCATE,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        chunk_window: int | None = None,
        truncate_dim: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> Any:
        """Sentence embeddings from any layer or combination of layers, sentence-transformers style.

        Example:
            >>> cls_avg = model.encode(texts, pooling="cls", layers="all")         # [CLS] of every layer, averaged
            >>> last4 = model.encode(texts, pooling="mean", layers="last4")        # mean of last 4, then mean pooling
            >>> mixed = model.encode(texts, layers=[-1, -2], combine="weighted", layer_weights=[0.7, 0.3])

        Args:
            sentences: A list of texts, or one text (then a 1-D vector is returned). List items may be
                (text_a, text_b) pairs, encoded together with segment ids as BERT was trained for pairs.
            batch_size: Most texts per inference call (fewer when long texts fill `batch_tokens`;
                texts are length-sorted inside the call).
            pooling: cls, mean, max, mean_sqrt_len, first_last_avg, or none for token embeddings
                (then a list of `TokenEmbeddings` is returned); default from the manifest.
            layers: Hidden states to use: an index (0 = embeddings, -1 = last layer), a list, a
                slice, or "last" (default), "last4", "all", "all+embeddings".
            combine: mean, sum, concat or weighted (with `layer_weights`, one per layer).
            layer_weights: Weights for combine="weighted", in the order of `layers`.
            pool_before_combine: Pool each layer first and combine the sentence vectors, instead of
                combining the token vectors and pooling once.
            normalize_embeddings: L2-normalize; default from the manifest.
            show_progress_bar: Show a progress bar on standard error.
            convert_to_numpy: True gives one (n, dim) array; False a list of 1-D arrays.
            long_texts: truncate (default: a long text keeps its start; one warning says how many texts
                were cut), truncate_left (it keeps its end) or chunk: texts longer than max_seq_length are
                embedded as overlapping windows whose vectors are combined, weighted by their token counts
                (max pooling takes the max over windows).
            chunk_overlap: Tokens each window repeats from the previous one (chunk mode).
            chunk_window: Tokens per window, special tokens included [max_seq_length].
            truncate_dim: Keep the first N dimensions (Matryoshka), normalized after the cut [all].
            prompt_name: Put the artifact's prompt of this name (`model.prompts`, e.g. "query") before
                each text, as the model was trained to see it. Default: the artifact's default prompt,
                if it declares one. Prompts apply to single texts' sentence vectors, not to pairs or
                token vectors.
            prompt: A prompt text of your own instead (not both); "" turns a default prompt off.

        Raises:
            InputError: the texts are not strings. OptionError: an invalid keyword value.
        """
        given = {name: value for name, value in locals().items() if name in SPEC}
        single = isinstance(sentences, str)
        texts = [sentences] if isinstance(sentences, str) else sentences
        if pooling == "none":
            sentence_only = [
                n for n in given if TOKENS not in SPEC[n].kinds and n != "pooling" and given[n] not in (None, False)
            ]
            if sentence_only:
                raise OptionError(
                    f"{', '.join(sentence_only)}: only for sentence vectors; pooling='none' gives token vectors"
                )
            if any(map(is_pair, texts)):
                raise OptionError("text pairs give sentence vectors only: pooling='none' needs single texts")
            layered = {name: value for name, value in given.items() if TOKENS in SPEC[name].kinds}
            tokens = self.compute(texts, self.recipe(EncodeOptions.from_mapping(layered, TOKENS), TOKENS), batch_size)
            return tokens[0] if single else tokens
        chosen = EncodeOptions.from_mapping(given)
        out = self._sentences(texts, chosen, batch_size, show_progress_bar)
        if single:
            return out[0]
        return out if convert_to_numpy else list(out)

    def _sentences(
        self, texts: Sequence[TextInput], options: EncodeOptions, batch_size: int, progress: bool
    ) -> np.ndarray:
        if not isinstance(texts, str) and isinstance(texts, Sequence) and any(map(is_pair, texts)):
            if options.long_texts is LongTexts.CHUNK:
                raise OptionError("text pairs give sentence vectors only: long_texts='chunk' needs single texts")
            if options.prompt_name is not None or options.prompt is not None:
                raise OptionError("prompts go before single texts; text pairs are encoded as given")
        return sentence_vectors(self.forward, texts, self.recipe(options), batch_size, progress)

    def encode_query(self, sentences: str | Sequence[str], prompt_name: str | None = None, **options: Any) -> Any:
        """`encode` for search queries: with the artifact's "query" prompt when it has one (else as `encode`
        would), unless `prompt_name` or `prompt` says otherwise. Takes every keyword `encode` takes."""
        if prompt_name is None and options.get("prompt") is None:
            prompt_name = self.manifest.prompts.first_of(QUERY_NAMES)
        return self.encode(sentences, prompt_name=prompt_name, **options)

    def encode_document(self, sentences: str | Sequence[str], prompt_name: str | None = None, **options: Any) -> Any:
        """`encode` for the documents searched: with the first of the artifact's "document", "passage" or
        "corpus" prompts it has (else as `encode` would), unless `prompt_name` or `prompt` says otherwise."""
        if prompt_name is None and options.get("prompt") is None:
            prompt_name = self.manifest.prompts.first_of(DOCUMENT_NAMES)
        return self.encode(sentences, prompt_name=prompt_name, **options)

    @property
    def prompts(self) -> dict[str, str]:
        """The artifact's prompts, name → the text put before each input."""
        return dict(self.manifest.prompts.named)

    def prompt_text(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The text `encode` would put before each input for these arguments ("" for none)."""
        return self.manifest.prompts.resolve(prompt_name, prompt)

    def encode_tokens(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        layers: LayerSpec | None = None,
        combine: Combine | str = Combine.MEAN,
        layer_weights: Sequence[float] | None = None,
        long_texts: LongTexts | str = LongTexts.TRUNCATE,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        chunk_window: int | None = None,
    ) -> list[TokenEmbeddings]:
        """Token vectors per text, without padding, with the tokens and their character offsets.

        With long_texts="chunk", windows are stitched back so that every token appears once.
        """
        options = EncodeOptions.from_mapping({n: v for n, v in locals().items() if n in SPEC}, TOKENS)
        return self.compute(texts, self.recipe(options, TOKENS), batch_size)  # type: ignore[return-value]

    def encode_words(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        merge: WordMerge | str = WordMerge.MEAN,
        batch_size: int = 32,
        layers: LayerSpec | None = None,
        combine: Combine | str = Combine.MEAN,
        layer_weights: Sequence[float] | None = None,
        long_texts: LongTexts | str = LongTexts.TRUNCATE,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        chunk_window: int | None = None,
    ) -> list[WordEmbeddings]:
        """Word vectors per text: sub-word pieces merged back into words, special tokens left out.

        Example:
            >>> words = model.encode_words(["The river bank flooded."])[0]
            >>> words.words, words.vectors.shape
            (('The', 'river', 'bank', 'flooded', '.'), (5, 384))

        Args:
            texts: Texts, or pre-split texts (each a list of words).
            merge: mean (default), first, last or max over a word's pieces.
        """
        options = EncodeOptions.from_mapping({n: v for n, v in locals().items() if n in SPEC}, WORDS)
        return self._words(texts, self.recipe(options, WORDS), batch_size)

    def _words(self, texts: Sequence[Any], recipe: Recipe, batch_size: int) -> list[WordEmbeddings]:
        pre_split = bool(texts) and not isinstance(texts[0], str) and isinstance(texts[0], Sequence)
        if pre_split:
            if recipe.chunked:
                raise OptionError("long_texts='chunk' works on plain texts, not pre-split words")
            encodings = self.tokenizer.encode_words(texts, keep_end=recipe.keep_end)
            self.forward.warn_truncated(encodings)
        else:
            encodings = self.forward.tokenize(texts, recipe)
        per_text = self.forward.token_vectors(encodings, batch_size, recipe)
        assert recipe.merge is not None  # a words recipe always has one
        results = []
        for text, (info, vectors) in zip(texts, per_text):
            words = list(text) if pre_split else None
            results.append(merge_words("" if pre_split else str(text), info, vectors, recipe.merge, words))
        return results

    def word_embedding(
        self, word: str, merge: WordMerge | str = WordMerge.MEAN, layers: LayerSpec | None = None
    ) -> np.ndarray:
        """The vector of one word given alone (its sub-word pieces merged), e.g. "apple"."""
        if not isinstance(word, str) or not word.strip():
            raise InputError(f"word_embedding needs a non-empty string, got {word!r}")
        vectors = self.encode_words([word], merge=merge, layers=layers)[0].vectors
        return vectors[0] if len(vectors) == 1 else np.asarray(vectors.mean(axis=0), dtype=np.float32)

    def hidden_states(self, texts: Sequence[str], batch_size: int = 32) -> list[np.ndarray]:
        """Every hidden state per text, for analysis: float32 (layers + 1, tokens, hidden), no padding.

        Texts longer than max_seq_length are truncated (with one warning).
        """
        everything = tuple(range(self.manifest.architecture.num_layers + 1))
        encodings = self.forward.tokenize(texts)
        results: list[np.ndarray | None] = [None] * len(encodings)
        for rows, _, states in self.forward.states(encodings, batch_size, everything):
            stacked = np.stack(states, axis=1)
            for j, row in enumerate(rows):
                results[row] = np.ascontiguousarray(stacked[j, :, : len(encodings[row].ids)])
        return [r for r in results if r is not None]

    def __repr__(self) -> str:
        return (
            f"Model({str(self.path)!r}, variant={self.variant.precision.value!r}, "
            f"device={self.device.value!r}, hidden_size={self.hidden_size})"
        )
