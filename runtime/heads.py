"""The task heads of fine-tuned artifacts on `Model`: classify, tag and rerank."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
from tokenizers import Encoding

from .forward import Forward
from .manifest import HeadKind, Manifest
from .tasks import Classification, Ranked, Tagging, classify_rows, ranked, relevance, require_head, tag_words
from .tokenization import TextInput, check_texts


class TaskHeads:
    """What `Model` offers for an artifact with a sequence- or token-classification head."""

    manifest: Manifest
    forward: Forward

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
        encodings = self.forward.tokenize(items)
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

    def head_logits(self, texts: Sequence[TextInput], batch_size: int = 32, keep_end: bool = False) -> list[np.ndarray]:
        """The head's raw logits per text or (text_a, text_b) pair, in input order (what `classify` and `rerank`
        turn into probabilities; the server batches requests of both by them). A long input is cut at its end,
        or with `keep_end` at its start."""
        require_head(self.manifest.head, HeadKind.SEQUENCE_CLASSIFICATION, "head_logits")
        encodings = self.forward.tokenizer.encode(texts, keep_end=True) if keep_end else None
        if encodings is not None:
            self.forward.warn_truncated(encodings)
        return self._head_logits(texts, batch_size, encodings)

    def _head_logits(
        self, texts: Sequence[TextInput], batch_size: int, encodings: Sequence[Encoding] | None = None
    ) -> list[np.ndarray]:
        """The head's logits per input: one row per text, or (tokens, labels) unpadded for a tagger."""
        head = self.manifest.head
        assert head is not None  # callers check with require_head
        encodings = self.forward.tokenize(texts) if encodings is None else encodings
        results: list[np.ndarray] = [np.empty(0)] * len(encodings)
        for rows, _, (logits,) in self.forward.batches(encodings, batch_size, [head.output]):
            for j, row in enumerate(rows):
                width = len(encodings[row].ids)
                results[row] = logits[j, :width] if head.kind is HeadKind.TOKEN_CLASSIFICATION else logits[j]
        return results
