"""`Model`: a loaded artifact that turns texts into sentence embeddings, with no torch."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
from tokenizers import Encoding

from .artifact import check_file, load_tokenizer
from .backends import Backend, GraphFile, InferencePrecision, Runner, RunOptions, open_graph
from .batching import DEFAULT_BATCH_TOKENS, check_batch_tokens, plan
from .chunking import LongTexts, combine_pooled, split, stitch
from .compact import check_truncate_dim
from .errors import ArtifactError, InputError, NonFiniteError, OptionError, caller_stacklevel
from .layers import Combine, LayerSpec, check_combination, select_layers
from .layers import combine as combine_states
from .loading import AUTO, auto_variant, device_for, variant_graph
from .manifest import HeadKind, Manifest, Pooling, Precision, Variant
from .options import choice
from .outputs import TokenEmbeddings, TokenInfo, WordEmbeddings, WordMerge, merge_words, token_embeddings
from .pooling import l2_normalize, pool
from .progress import ProgressBar
from .prompts import DOCUMENT_NAMES, QUERY_NAMES
from .session import Device, TensorRTSettings
from .tasks import Classification, Ranked, Tagging, classify_rows, ranked, relevance, require_head, tag_words
from .tokenization import Batch, TextInput, check_inputs, check_texts, is_pair, is_truncated


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's max_seq_length and were cut."""


class Model:
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
        self.batch_tokens = check_batch_tokens(batch_tokens)
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)
        if isinstance(variant, str) and variant == AUTO:
            variant = auto_variant(self.manifest, device)
        self.variant: Variant = self.manifest.variant(variant)
        graph = variant_graph(self.path, self.variant)
        requested = device_for(self.variant, graph, device)
        what = self.variant.precision.value
        check_file(graph.path, self.variant.size_bytes, f"{what} model", self.variant.sha256 if verify else None)
        for name, facts in self.variant.extra_files.items():
            digest = str(facts["sha256"]) if verify else None
            check_file(self.path / name, int(facts["size_bytes"]), f"{what} weights", digest)
        self.tokenizer = load_tokenizer(self.path, self.manifest)
        tensorrt = TensorRTSettings(
            cache_dir=self.path / "trt-cache" / self.variant.precision.value,
            input_names=self.manifest.inputs,
            max_batch=max_batch_size,
            max_length=self.tokenizer.max_length,
            opt_length=min(128, self.tokenizer.max_length),
            fp16=self.variant.precision is Precision.FP16,
            int8=self.variant.precision is Precision.INT8,
        )
        if requested is Device.OPENVINO:
            graph = GraphFile(graph.path, Backend.OPENVINO, graph.precision or InferencePrecision.F32)
        self.runner: Runner = open_graph(
            graph, RunOptions(requested, threads, allow_fallback, tensorrt, cpu_arena, self.path / "ov-cache")
        )
        self.device = self.runner.device
        declared = set(self.runner.input_names)
        if declared != set(self.manifest.inputs):
            raise ArtifactError(
                f"{self.variant.file} takes inputs {sorted(declared)} but the manifest says "
                f"{sorted(self.manifest.inputs)}; the artifact folder is inconsistent, re-export it"
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        variant: Precision | str = Precision.FP32,
        device: Device | str | None = None,
        threads: int | None = None,
        allow_fallback: bool = False,
        max_batch_size: int = 32,
        cpu_arena: bool = True,
        batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
        verify: bool = True,
    ) -> Model:
        """Load an artifact folder written by `bertx export`.

        Args:
            path: The artifact folder (it holds bertx.json).
            variant: fp32 (default), int8, fp16, bf16, or auto: the variant the export measured fastest
                at its target accuracy on the exporting CPU (`bertx info` shows it), or the next one
                where this CPU or installation cannot run it (a `FallbackWarning` says why).
            device: "cpu" (onnxruntime), "cuda", "tensorrt", "openvino" (extra `bertx[openvino]`), or
                "auto" (CUDA when available, else CPU). Default: the engine the variant was built for
                (the manifest's `backend`: OpenVINO for bf16 and for an INT8 variant made by NNCF).
            threads: Inference threads; default: the CPUs this process may use (affinity, cgroup quota)
                when it is restricted, else the engine's own choice.
            allow_fallback: Run on the CPU with a warning when CUDA is asked for but unavailable,
                instead of raising `ProviderError`.
            max_batch_size: Largest batch the TensorRT engine profile allows.
            cpu_arena: Keep onnxruntime's CPU memory arena (faster); False returns memory between calls.
            batch_tokens: Padded tokens per batch, long texts counting extra for their attention; a
                batch holds as many texts as fit, at least one and at most the call's `batch_size`. This
                bounds the working memory whatever the text lengths. None batches by `batch_size` only.
            verify: Check each model file's sha256 against the manifest before loading it (a corrupted
                file of the right size would otherwise load and give wrong vectors).
        """
        return cls(path, variant, device, threads, allow_fallback, max_batch_size, cpu_arena, batch_tokens, verify)

    @property
    def hidden_size(self) -> int:
        """Width of every embedding this model returns."""
        return self.manifest.architecture.hidden_size

    @property
    def max_seq_length(self) -> int:
        """Texts are truncated to this many tokens, special tokens included."""
        return self.tokenizer.max_length

    def embed(
        self,
        texts: Sequence[TextInput],
        pooling: Pooling | str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
        prompt_name: str | None = None,
    ) -> np.ndarray:
        """Embed texts into one float32 vector each, from the last layer.

        Args:
            texts: The texts, or (text_a, text_b) pairs (encoded together, with segment ids); an empty
                list gives an array of shape (0, hidden_size).
            pooling: cls, mean, max, mean_sqrt_len or first_last_avg; default from the manifest.
            normalize: L2-normalize each vector; default from the manifest.
            batch_size: Most texts per inference call; fewer when long texts fill the model's
                `batch_tokens` budget. Texts are sorted by length inside the call so that batches carry
                little padding; the result keeps the input order.
            prompt_name: One of the artifact's prompts (`model.prompts`) to put before each text;
                default: the artifact's default prompt, if it has one.

        Returns:
            A float32 array of shape (len(texts), hidden_size).

        Raises:
            InputError: `texts` is not a list of strings (the message names the bad item).
        """
        check_inputs(texts)
        return np.asarray(
            self.encode(
                texts, batch_size=batch_size, pooling=pooling, normalize_embeddings=normalize, prompt_name=prompt_name
            )
        )

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
        chunk_overlap: int = 32,
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
            long_texts: truncate (default; one warning says how many texts were cut) or chunk: texts
                longer than max_seq_length are embedded as overlapping windows whose vectors are
                combined, weighted by their token counts (max pooling takes the max over windows).
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
        mode = self.manifest.defaults.pooling if pooling is None else _pooling(pooling)
        explicit_prompt = prompt_name is not None or prompt is not None
        prefix = self.manifest.prompts.resolve(prompt_name, prompt)
        chunked = choice(LongTexts, long_texts, "long_texts") is LongTexts.CHUNK
        if not isinstance(sentences, str) and isinstance(sentences, Sequence) and any(map(is_pair, sentences)):
            if mode is None or chunked:
                raise OptionError(
                    "text pairs give sentence vectors only: pooling='none' and long_texts='chunk' need single texts"
                )
            if explicit_prompt:
                raise OptionError("prompts go before single texts; text pairs are encoded as given")
            prefix = ""
        if mode is None:
            if truncate_dim is not None:
                raise OptionError("truncate_dim cuts sentence vectors; pooling='none' gives token vectors")
            if explicit_prompt:
                raise OptionError("prompts apply to sentence vectors; pooling='none' gives token vectors as given")
            single = isinstance(sentences, str)
            tokens = self.encode_tokens(
                [sentences] if isinstance(sentences, str) else sentences,  # type: ignore[arg-type]
                batch_size,
                layers,
                combine,
                layer_weights,
                long_texts,
                chunk_overlap,
                chunk_window,
            )
            return tokens[0] if single else tokens
        how = choice(Combine, combine, "combine")
        if mode is Pooling.FIRST_LAST_AVG:
            if layers is not None:
                raise OptionError("pooling='first_last_avg' chooses its own layers (1 and -1); leave layers unset")
            chosen: tuple[int, ...] = (1, self.manifest.architecture.num_layers)
            how, layer_weights = Combine.MEAN, None
        else:
            chosen = select_layers(layers, self.manifest.architecture.num_layers)
        check_combination(how, layer_weights, len(chosen))
        unit = self.manifest.defaults.normalize if normalize_embeddings is None else normalize_embeddings
        single = isinstance(sentences, str)
        texts = [sentences] if isinstance(sentences, str) else sentences
        hidden_prompt = self._prompt_tokens(prefix, chunked)
        if prefix:
            texts = [prefix + text for text in check_inputs(texts)]  # type: ignore[operator]
        encodings = self._tokenize(texts, long_texts, chunk_overlap, chunk_window)
        windows = split(encodings) if chunked else None
        flat = windows.encodings if windows is not None else encodings
        width = self.hidden_size * (len(chosen) if how is Combine.CONCAT else 1)
        check_truncate_dim(truncate_dim, width)
        out = np.empty((len(flat), width), dtype=np.float32)
        for rows, batch, states in self._forward(flat, batch_size, chosen, show_progress_bar):
            mask = batch.mask
            if hidden_prompt:
                mask = mask.copy()
                mask[:, :hidden_prompt] = 0
            if pool_before_combine:
                out[rows] = combine_states([pool(h, mask, mode) for h in states], how, layer_weights)
            else:
                out[rows] = pool(combine_states(states, how, layer_weights), mask, mode)
        if windows is not None:
            counts = np.array([len(e.ids) for e in windows.encodings])
            out = (
                np.stack(
                    [combine_pooled(out[w], counts[w], mode is Pooling.MAX) for w in map(windows.of, range(len(texts)))]
                )
                if texts
                else out
            )
        out = out if truncate_dim is None else np.ascontiguousarray(out[:, :truncate_dim])
        if unit:
            out = l2_normalize(out)
        if single:
            return out[0]
        return out if convert_to_numpy else list(out)

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

    def _prompt_tokens(self, prefix: str, chunked: bool) -> int:
        """How many leading tokens pooling leaves out: the prompt's, when the model was trained to pool
        without them (sentence-transformers' `include_prompt=False`), else none."""
        if not prefix or self.manifest.prompts.include_prompt:
            return 0
        if chunked:
            raise OptionError(
                "this model pools without its prompt's tokens, which only the first window of a chunked text "
                "holds: use long_texts='truncate' with a prompt"
            )
        (encoding,) = self.tokenizer.encode([prefix])
        # As sentence-transformers counts it: the prompt's tokens with [CLS], without the closing [SEP].
        count = len(encoding.ids) - (1 if encoding.special_tokens_mask[-1] else 0)
        if count >= self.max_seq_length - 1:
            raise OptionError(f"the prompt takes {count} tokens and leaves no room for text in {self.max_seq_length}")
        return count

    def encode_tokens(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        layers: LayerSpec | None = None,
        combine: Combine | str = Combine.MEAN,
        layer_weights: Sequence[float] | None = None,
        long_texts: LongTexts | str = LongTexts.TRUNCATE,
        chunk_overlap: int = 32,
        chunk_window: int | None = None,
    ) -> list[TokenEmbeddings]:
        """Token vectors per text, without padding, with the tokens and their character offsets.

        With long_texts="chunk", windows are stitched back so that every token appears once.
        """
        encodings = self._tokenize(texts, long_texts, chunk_overlap, chunk_window)
        per_text = self._token_vectors(encodings, batch_size, layers, combine, layer_weights, long_texts, chunk_overlap)
        return [token_embeddings(text, info, vectors) for text, (info, vectors) in zip(texts, per_text)]

    def encode_words(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        merge: WordMerge | str = WordMerge.MEAN,
        batch_size: int = 32,
        layers: LayerSpec | None = None,
        combine: Combine | str = Combine.MEAN,
        layer_weights: Sequence[float] | None = None,
        long_texts: LongTexts | str = LongTexts.TRUNCATE,
        chunk_overlap: int = 32,
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
        how_merge = choice(WordMerge, merge, "merge")
        pre_split = bool(texts) and not isinstance(texts[0], str) and isinstance(texts[0], Sequence)
        if pre_split:
            if choice(LongTexts, long_texts, "long_texts") is LongTexts.CHUNK:
                raise OptionError("long_texts='chunk' works on plain texts, not pre-split words")
            encodings = self.tokenizer.encode_words(texts)  # type: ignore[arg-type]
            self._warn_truncated(encodings)
        else:
            encodings = self._tokenize(texts, long_texts, chunk_overlap, chunk_window)  # type: ignore[arg-type]
        per_text = self._token_vectors(encodings, batch_size, layers, combine, layer_weights, long_texts, chunk_overlap)
        results = []
        for text, (info, vectors) in zip(texts, per_text):
            words = list(text) if pre_split else None
            results.append(merge_words("" if pre_split else str(text), info, vectors, how_merge, words))
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
        encodings = self._tokenize(texts)
        results: list[np.ndarray | None] = [None] * len(encodings)
        for rows, _, states in self._forward(encodings, batch_size, everything):
            stacked = np.stack(states, axis=1)
            for j, row in enumerate(rows):
                results[row] = np.ascontiguousarray(stacked[j, :, : len(encodings[row].ids)])
        return [r for r in results if r is not None]

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels of the artifact's task head, in logit order (empty for a bare encoder)."""
        return () if self.manifest.head is None else self.manifest.head.labels

    @overload
    def classify(  # type: ignore[overload-overlap]  # a str is also a Sequence: the first match wins
        self, texts: str, batch_size: int = 32, multi_label: bool | None = None, threshold: float = 0.5
    ) -> Classification: ...
    @overload
    def classify(
        self, texts: Sequence[TextInput], batch_size: int = 32, multi_label: bool | None = None, threshold: float = 0.5
    ) -> list[Classification]: ...
    def classify(
        self,
        texts: str | Sequence[TextInput],
        batch_size: int = 32,
        multi_label: bool | None = None,
        threshold: float = 0.5,
    ) -> Classification | list[Classification]:
        """Labels and probabilities from a fine-tuned sequence-classification head.

        Example:
            >>> model.classify(["What a great film!"])[0].label
            'positive'
            >>> model.classify([("A man eats.", "Someone has a meal.")])[0].scores(model.labels)  # a pair (NLI)

        Args:
            texts: Texts or (text_a, text_b) pairs, or one text (then one `Classification` is returned).
            batch_size: Most texts per inference call.
            multi_label: Score each label on its own with a sigmoid (True) or pick one with a softmax
                (False); default from the checkpoint's problem_type.
            threshold: Multi-label: a label is predicted when its probability reaches this.

        Returns:
            A list of `Classification` (label, score, labels, probabilities), in input order.

        Raises:
            HeadError: the artifact has no sequence-classification head.
        """
        head = require_head(self.manifest.head, HeadKind.SEQUENCE_CLASSIFICATION, "classify")
        single = isinstance(texts, str)
        logits = self._head_logits([texts] if isinstance(texts, str) else texts, batch_size)
        results = classify_rows(
            np.stack(logits) if logits else np.zeros((0, len(head.labels))), head, multi_label, threshold
        )
        return results[0] if single else results

    @overload
    def tag(self, texts: str, batch_size: int = 32) -> Tagging: ...  # type: ignore[overload-overlap]
    @overload
    def tag(self, texts: Sequence[str], batch_size: int = 32) -> list[Tagging]: ...
    def tag(self, texts: str | Sequence[str], batch_size: int = 32) -> Tagging | list[Tagging]:
        """A label per word from a fine-tuned token-classification head (NER, part of speech, …).

        Example:
            >>> tagged = model.tag(["Ada Lovelace lived in London."])[0]
            >>> list(zip(tagged.words, tagged.labels))
            [('Ada', 'B-PER'), ('Lovelace', 'I-PER'), ('lived', 'O'), ('in', 'O'), ('London', 'B-LOC'), ('.', 'O')]
            >>> tagged.entities()  # words grouped by their IOB2 labels, with character spans

        Returns:
            A list of `Tagging` (words, spans, labels, scores) in input order, or one for a single text.

        Raises:
            HeadError: the artifact has no token-classification head.
        """
        head = require_head(self.manifest.head, HeadKind.TOKEN_CLASSIFICATION, "tag")
        single = isinstance(texts, str)
        items = [texts] if isinstance(texts, str) else texts
        check_texts(items)
        encodings = self._tokenize(items)
        logits = self._head_logits(items, batch_size, encodings)
        results = [tag_words(text, e, rows, head) for text, e, rows in zip(items, encodings, logits)]
        return results[0] if single else results

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        batch_size: int = 32,
        label: str | None = None,
    ) -> list[Ranked]:
        """Order documents by relevance to a query with a cross-encoder (a pair classifier).

        Each (query, document) pair is scored by the sequence-classification head: the sigmoid of a
        one-output head (sentence-transformers' CrossEncoder convention), else the probability of `label`
        (default: the head's last label).

        Returns:
            The best `top_k` (default all) as `Ranked` (index in `documents`, score, document), best first.
        """
        head = require_head(self.manifest.head, HeadKind.SEQUENCE_CLASSIFICATION, "rerank")
        check_texts([query])
        check_texts(documents)
        logits = self._head_logits([(query, doc) for doc in documents], batch_size)
        matrix = np.stack(logits) if logits else np.zeros((0, len(head.labels)), dtype=np.float32)
        return ranked(relevance(matrix, head, label), documents, top_k)

    def _head_logits(
        self, texts: Sequence[TextInput], batch_size: int, encodings: Sequence[Encoding] | None = None
    ) -> list[np.ndarray]:
        """The head's logits per input: one row per text, or (tokens, labels) unpadded for a tagger."""
        head = self.manifest.head
        assert head is not None  # callers check with require_head
        encodings = self._tokenize(texts) if encodings is None else encodings
        results: list[np.ndarray] = [np.empty(0)] * len(encodings)
        for rows, _, (logits,) in self._batches(encodings, batch_size, [head.output]):
            for j, row in enumerate(rows):
                width = len(encodings[row].ids)
                results[row] = logits[j, :width] if head.kind is HeadKind.TOKEN_CLASSIFICATION else logits[j]
        return results

    def _tokenize(
        self,
        texts: Sequence[TextInput],
        long_texts: LongTexts | str = LongTexts.TRUNCATE,
        overlap: int = 32,
        window: int | None = None,
    ) -> list[Encoding]:
        if choice(LongTexts, long_texts, "long_texts") is LongTexts.CHUNK:
            return self.tokenizer.encode_windows(texts, overlap, window)  # type: ignore[arg-type]
        encodings = self.tokenizer.encode(texts)
        self._warn_truncated(encodings)
        return encodings

    def _token_vectors(
        self,
        encodings: Sequence[Encoding],
        batch_size: int,
        layers: LayerSpec | None,
        combine: Combine | str,
        layer_weights: Sequence[float] | None,
        long_texts: LongTexts | str,
        overlap: int,
    ) -> list[tuple[TokenInfo, np.ndarray]]:
        """Unpadded token vectors per text with the token facts that go with them (stitched when chunked)."""
        how = choice(Combine, combine, "combine")
        chosen = select_layers(layers, self.manifest.architecture.num_layers)
        check_combination(how, layer_weights, len(chosen))
        chunked = choice(LongTexts, long_texts, "long_texts") is LongTexts.CHUNK
        windows = split(encodings) if chunked else None
        flat = windows.encodings if windows is not None else list(encodings)
        matrices: list[np.ndarray] = [np.empty(0)] * len(flat)
        for rows, _, states in self._forward(flat, batch_size, chosen):
            merged = combine_states(states, how, layer_weights)
            for j, row in enumerate(rows):
                matrices[row] = merged[j, : len(flat[row].ids)]
        if windows is None:
            return list(zip(encodings, matrices))
        results: list[tuple[TokenInfo, np.ndarray]] = []
        for text in range(len(encodings)):
            parts = windows.of(text)
            stitched = stitch([flat[w] for w in parts], [matrices[w] for w in parts], overlap)
            results.append((stitched, stitched.vectors))
        return results

    def _warn_truncated(self, encodings: Sequence[Encoding]) -> None:
        cut = sum(is_truncated(e) for e in encodings)
        if cut:
            warnings.warn(
                f"{cut} of {len(encodings)} texts were longer than {self.max_seq_length} tokens and were truncated",
                TruncationWarning,
                stacklevel=caller_stacklevel(),
            )

    def _forward(
        self, encodings: Sequence[Encoding], batch_size: int, layers: tuple[int, ...], progress: bool = False
    ) -> Iterator[tuple[np.ndarray, Batch, list[np.ndarray]]]:
        """Run length-sorted batches, fetching only the hidden states in `layers` from the engine."""
        wanted = sorted(set(layers))
        names = [self.manifest.outputs[i] for i in wanted]
        for rows, batch, arrays in self._batches(encodings, batch_size, names, progress):
            fetched = dict(zip(wanted, arrays))
            yield rows, batch, [fetched[i] for i in layers]

    def _batches(
        self, encodings: Sequence[Encoding], batch_size: int, names: list[str], progress: bool = False
    ) -> Iterator[tuple[np.ndarray, Batch, list[np.ndarray]]]:
        """Run length-sorted token-budget batches; yield each batch's rows (input positions), its padded
        inputs and the named outputs."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        architecture = self.manifest.architecture
        # Attention scores per token (heads × width) against the feed-forward's 4 × hidden activations.
        ratio = architecture.num_heads / (4 * architecture.hidden_size)
        bar = ProgressBar(len(encodings)) if progress else None
        try:
            for start, stop in plan(lengths[order], batch_size, self.batch_tokens, ratio):
                rows = order[start:stop]
                batch = self.tokenizer.pad([encodings[i] for i in rows])
                yield rows, batch, self._run(names, batch.feeds(self.manifest.inputs))
                if bar is not None:
                    bar.advance(len(rows))
        finally:
            if bar is not None:
                bar.close()

    def _run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; a NaN or infinity on a real token is an error, never part of a result."""
        arrays = self.runner.run(names, feeds)
        for name, array in zip(names, arrays):
            if not np.isfinite(array).all() and not _finite_where_real(array, feeds.get("attention_mask")):
                texts = len(next(iter(feeds.values())))
                raise NonFiniteError(
                    f"the {self.variant.precision.value} variant on {self.device.value} returned NaN or infinity in "
                    f"{name} for a batch of {texts} text(s) of {self.path.name}; no vector was returned. Try "
                    "another variant or device; with OpenVINO, deleting the artifact's ov-cache/ forces a fresh compile"
                )
        return arrays

    def __repr__(self) -> str:
        return (
            f"Model({str(self.path)!r}, variant={self.variant.precision.value!r}, "
            f"device={self.device.value!r}, hidden_size={self.hidden_size})"
        )


def _finite_where_real(array: np.ndarray, mask: np.ndarray | None) -> bool:
    """Whether a token-shaped output is finite on the real (unpadded) tokens; padding may hold anything."""
    if mask is None or array.shape[:2] != mask.shape:
        return False
    return bool(np.isfinite(array[mask.astype(bool)]).all())


def _pooling(value: Pooling | str) -> Pooling | None:
    """A pooling name, or None for "none" (token embeddings)."""
    if value == "none":
        return None
    return choice(Pooling, value, "pooling")
