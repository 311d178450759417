"""The service behind the routes for one model: the model, its batcher and its metrics; requests as recipes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from bertx.errors import BertxError, NonFiniteError
from bertx.manifest import Head, HeadKind
from bertx.model import Model
from bertx.options import SENTENCE, WORDS, EncodeOptions
from bertx.recipe import Recipe
from bertx.tasks import relevance, require_head
from bertx.tokenization import check_texts

from .batcher import Batcher, Overloaded, RoundStats
from .metrics import Metrics, ModelMetrics
from .settings import ServerSettings

# The batching keys of task-head requests (/predict, /rerank): the head's logits for each text or pair, with a
# long input cut at its end, or at its start (TEI's truncation_direction "Left").
LOGITS = "logits"
LOGITS_KEEPING_END = "logits, long inputs keeping their end"
WARM_UP = ["warm-up", "A longer sentence to warm up the model with more than a handful of tokens in it."]


class ApiError(Exception):
    """An error the client caused or must wait out; becomes a JSON error response."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        retry_after: int = 0,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after = status, message, kind, retry_after
        self.code = code  # OpenAI's `code` when it has a name for the error [the status]


class Service:
    """One model, with its own batcher (queue) and metrics, behind the routes.

    Requests are batched by their `Recipe`: what they compute on this model, defaults resolved, so two
    requests that mean the same thing (whatever route or spelling they came by) share rounds.
    """

    def __init__(self, model: Model, name: str, settings: ServerSettings, metrics: Metrics) -> None:
        self.model = model
        self.name = name
        self.settings = settings
        self.batcher = Batcher(self._run_group, settings.batch, self._on_round)
        self.metrics: ModelMetrics = metrics.for_model(name, self.batcher)
        self.ready = False

    def _on_round(self, stats: RoundStats) -> None:
        self.metrics.on_round(stats)

    def _run_group(self, key: Hashable, items: list[Any]) -> Sequence[Any]:
        """In the batcher's thread: one call of the model for every queued item of this recipe."""
        if key in (LOGITS, LOGITS_KEEPING_END):
            return self.model.head_logits(items, keep_end=key == LOGITS_KEEPING_END)
        assert isinstance(key, Recipe)
        return list(self.model.compute(items, key))

    async def warm_up(self) -> None:
        """Run the model once through the batcher, then report ready."""
        recipe = self.model.recipe(EncodeOptions())
        await self.batcher.submit(recipe, WARM_UP, [len(t.split()) + 2 for t in WARM_UP])
        self.ready = True

    def recipe(self, options: Callable[[], EncodeOptions], kind: str) -> Recipe:
        """The recipe of a request's options (made by `options`); a bad option, whether `EncodeOptions` or the
        artifact refuses it, is the caller's 400, before anything runs."""
        try:
            return self.model.recipe(options(), kind)
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None

    def head(self, kind: HeadKind, task: str) -> Head:
        """The model's task head for `task`, or a 400 that says which artifact the route needs."""
        try:
            return require_head(self.model.manifest.head, kind, task)
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None

    async def rerank(
        self,
        query: str,
        texts: Sequence[str],
        truncate: bool | None = None,
        raw: bool = False,
        keep_end: bool = False,
    ) -> tuple[np.ndarray, int]:
        """Each text's relevance to `query` from the model's cross-encoder head (its raw logit with `raw`), and
        the tokens the pairs cost; a long pair is cut at its end, or with `keep_end` at its start."""
        head = self.head(HeadKind.SEQUENCE_CLASSIFICATION, "rerank")
        key = LOGITS_KEEPING_END if keep_end else LOGITS
        logits, tokens = await self.run(key, [(query, text) for text in texts], truncate)
        matrix = np.stack(logits)
        try:
            return (matrix[:, -1] if raw else relevance(matrix, head, None)), tokens
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None

    def token_counts(self, texts: Sequence[Any], key: Recipe | str, truncate: bool | None = None) -> list[int]:
        """Tokens each text costs (special tokens and the prompt included; every window when chunked). With
        `truncate` false, a text over the model's length is refused (413), as text-embeddings-inference does."""
        tokenizer = self.model.tokenizer
        recipe = key if isinstance(key, Recipe) else None
        if recipe is not None and recipe.kind == WORDS and texts and isinstance(texts[0], list):
            encodings = tokenizer.encode_words(texts)
        elif recipe is not None and recipe.chunked:
            plain = [text if isinstance(text, str) else text[0] for text in texts]  # late chunks: (text, spans)
            encodings = tokenizer.encode_windows(plain, 0)
            return [len(e.ids) + sum(len(o.ids) for o in e.overflowing) for e in encodings]
        else:
            prefix = recipe.prefix if recipe is not None and recipe.kind == SENTENCE else ""
            encodings = tokenizer.encode([prefix + text for text in texts] if prefix else texts)
        truncated = [index for index, e in enumerate(encodings) if e.overflowing]
        if truncated and truncate is False:
            longest = max(len(encodings[i].ids) + sum(len(o.ids) for o in encodings[i].overflowing) for i in truncated)
            raise ApiError(
                413,
                f"input {truncated[0]} is longer than this model's {self.model.max_seq_length} tokens (up to about "
                f"{longest}); send truncate: true to cut it",
            )
        if truncated:
            self.metrics.truncated.inc(len(truncated))
        return [len(e.ids) for e in encodings]

    async def run(self, key: Recipe | str, texts: Sequence[Any], truncate: bool | None = None) -> tuple[list[Any], int]:
        """Results for `texts` (by a recipe, or the head's logits for LOGITS) and the tokens they cost, through
        the batcher. Tokens are counted off the event loop, so a large request never stalls the others."""
        if not self.ready:
            raise ApiError(503, "the model is still warming up", "unavailable", retry_after=1)
        self.check_size(texts, key.prefix if isinstance(key, Recipe) and key.kind == SENTENCE else "")
        try:
            counts = await asyncio.to_thread(self.token_counts, texts, key, truncate)
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
        try:
            results = await self.batcher.submit(key, texts, counts)
        except Overloaded as exc:
            raise ApiError(503, str(exc), "overloaded", retry_after=exc.retry_after) from None
        except NonFiniteError as exc:
            raise ApiError(500, str(exc), "server_error") from None
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
        self.metrics.tokens.inc(sum(counts))
        return results, sum(counts)

    def check_size(self, texts: Sequence[Any], prefix: str = "") -> None:
        """A 413 when the texts (prompt expansion included) hold more characters than this server takes: the
        bound is on what a request produces, not on its body, which a prompt can multiply."""
        limit = self.settings.max_request_chars
        size = sum(
            len(t) if isinstance(t, str) else len(t[0]) if isinstance(t, tuple) else sum(map(len, t)) for t in texts
        )
        size += len(prefix) * len(texts)
        if size > limit:
            raise ApiError(413, f"the request's texts hold {size:,} characters; this server takes at most {limit:,}")

    def texts(self, value: str | list[Any]) -> list[Any]:
        """The request's texts as a list, checked: not empty, not too many, valid Unicode."""
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            raise ApiError(400, "input is empty: send at least one text")
        if len(texts) > self.settings.max_inputs:
            raise ApiError(413, f"too many inputs: {len(texts)}, this server takes at most {self.settings.max_inputs}")
        try:
            if isinstance(texts[0], list):
                for index, words in enumerate(texts):
                    check_texts(words, what=f"text {index}: ")
                    if not words:
                        raise ApiError(400, f"text {index} has no words")
            else:
                check_texts(texts)
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
        return texts
