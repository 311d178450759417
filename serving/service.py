"""The service behind the routes: one model, its batcher and its metrics; requests as recipes."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from bertx.errors import BertxError
from bertx.model import Model
from bertx.options import SENTENCE, WORDS, EncodeOptions
from bertx.recipe import Recipe
from bertx.tokenization import check_texts

from .batcher import Batcher, Overloaded, RoundStats
from .metrics import Metrics
from .settings import ServerSettings

WARM_UP = ["warm-up", "A longer sentence to warm up the model with more than a handful of tokens in it."]


class ApiError(Exception):
    """An error the client caused or must wait out; becomes a JSON error response."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", retry_after: int = 0) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after = status, message, kind, retry_after


class Service:
    """The model, the batcher and the metrics behind one app.

    Requests are batched by their `Recipe`: what they compute on this model, defaults resolved, so two
    requests that mean the same thing (whatever route or spelling they came by) share rounds.
    """

    def __init__(self, model: Model, settings: ServerSettings) -> None:
        self.model = model
        self.settings = settings
        self.name = settings.model_name or model.manifest.source.id
        self.batcher = Batcher(self._run_group, settings.batch, self._on_round)
        self.metrics = Metrics(self.batcher)
        self.ready = False

    def _on_round(self, stats: RoundStats) -> None:
        self.metrics.on_round(stats)

    def _run_group(self, key: Hashable, items: list[Any]) -> Sequence[Any]:
        """In the batcher's thread: one call of the model for every queued item of this recipe."""
        assert isinstance(key, Recipe)
        results = self.model.compute(items, key)
        return list(results)

    async def warm_up(self) -> None:
        """Run the model once through the batcher, then report ready."""
        recipe = self.model.recipe(EncodeOptions())
        await self.batcher.submit(recipe, WARM_UP, [len(t.split()) + 2 for t in WARM_UP])
        self.ready = True

    def recipe(self, options: EncodeOptions | BertxError, kind: str) -> Recipe:
        """The request's recipe; a bad option is the caller's 400 (checked here, before anything runs)."""
        try:
            if isinstance(options, BertxError):
                raise options
            return self.model.recipe(options, kind)
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None

    def token_counts(self, texts: Sequence[Any], recipe: Recipe) -> list[int]:
        """Tokens each text costs (special tokens and the prompt included; every window when chunked)."""
        tokenizer = self.model.tokenizer
        if recipe.kind == WORDS and texts and isinstance(texts[0], list):
            encodings = tokenizer.encode_words(texts)
        elif recipe.chunked:
            encodings = tokenizer.encode_windows(texts, 0)
            return [len(e.ids) + sum(len(o.ids) for o in e.overflowing) for e in encodings]
        else:
            prefix = recipe.prefix if recipe.kind == SENTENCE else ""
            encodings = tokenizer.encode([prefix + text for text in texts] if prefix else texts)
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            self.metrics.truncated.inc(truncated)
        return [len(e.ids) for e in encodings]

    async def run(self, recipe: Recipe, texts: Sequence[Any]) -> tuple[list[Any], int]:
        """Results for `texts` and the tokens they cost, through the batcher."""
        if not self.ready:
            raise ApiError(503, "the model is still warming up", "unavailable", retry_after=1)
        try:
            counts = self.token_counts(texts, recipe)
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
        try:
            results = await self.batcher.submit(recipe, texts, counts)
        except Overloaded as exc:
            raise ApiError(503, str(exc), "overloaded", retry_after=exc.retry_after) from None
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
        self.metrics.tokens.inc(sum(counts))
        return results, sum(counts)

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
