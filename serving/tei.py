"""text-embeddings-inference's API, as TEI defines it, so its clients work unchanged.

`POST /embed` (and `POST /` for an embedding model), `/embed_all`, `/rerank` and `/predict` (artifacts with
a sequence-classification head; `POST /` for them), `/tokenize` and `/decode`, with TEI's request and
response shapes and its error body, `{"error": "...", "error_type": "..."}`. `/embed` also takes every
bertx sentence option (layers, combine, pooling, …) by its name in the one vocabulary of options.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field, ValidationError

from bertx.chunking import LongTexts
from bertx.errors import BertxError
from bertx.manifest import HeadKind
from bertx.options import SENTENCE, TOKENS, EncodeOptions
from bertx.tasks import probabilities

from .guard import json_response, vector_json
from .models import CLASSIFY, EMBED, RERANK, Models
from .schemas import Direction, EmbedAllRequest, EmbedRequest, ModelName, Strict, options_of
from .service import LOGITS, LOGITS_KEEPING_END, ApiError, Service


class RerankRequest(Strict):
    """TEI's rerank request: score each text against the query with a cross-encoder."""

    query: str
    texts: list[str]
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    raw_scores: bool = False
    return_text: bool = False
    model: ModelName = None


class PredictRequest(Strict):
    """TEI's predict request: one text, one (text_a, text_b) pair, or a batch of either."""

    inputs: str | list[str] | list[list[str]] = Field(
        description='A text, a pair ["a", "b"], or a batch: ["a", "b", "c"], [["a", "b"], ["c", "d"]].'
    )
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    raw_scores: bool = False
    model: ModelName = None


class TokenizeRequest(Strict):
    """TEI's tokenize request."""

    inputs: str | list[str]
    add_special_tokens: bool = True
    prompt_name: str | None = None
    model: ModelName = None


class DecodeRequest(Strict):
    """TEI's decode request."""

    ids: list[int] | list[list[int]]
    skip_special_tokens: bool = True
    model: ModelName = None


def add_tei_routes(app: FastAPI, models: Models) -> None:
    """Register TEI's routes (`TEI_ROUTES`) on `app`."""

    @app.post("/embed", summary="TEI: sentence vectors, a list per input (any bertx sentence option too)")
    async def embed(body: EmbedRequest) -> Response:
        return await _embed(models.pick(body.model), body)  # type: ignore[attr-defined]

    @app.post("/embed_all", summary="TEI: every token's vector from the last layer (or the layers asked for)")
    async def embed_all(body: EmbedAllRequest) -> Response:
        service = models.pick(body.model)  # type: ignore[attr-defined]
        texts = service.texts(body.inputs)  # type: ignore[attr-defined]
        recipe = service.recipe(lambda: _options(body, TOKENS), TOKENS)
        results, _ = await service.run(recipe, texts, truncate=body.truncate)  # type: ignore[attr-defined]
        return json_response([r.vectors.tolist() for r in results])

    @app.post("/rerank", summary="TEI: texts ordered by relevance to a query (a cross-encoder artifact)")
    async def rerank(body: RerankRequest) -> Response:
        service = models.pick(body.model, RERANK)
        texts = service.texts(body.texts)
        scores, _ = await service.rerank(body.query, texts, body.truncate, body.raw_scores, _keep_end(body))
        order = np.argsort(-scores, kind="stable")
        out: list[dict[str, Any]] = []
        for index in order:
            row: dict[str, Any] = {"index": int(index), "score": float(scores[index])}
            if body.return_text:
                row["text"] = texts[index]
            out.append(row)
        return json_response(out)

    @app.post("/predict", summary="TEI: labels and scores from a classifier artifact")
    async def predict(body: PredictRequest) -> Response:
        return await _predict(models.pick(body.model, CLASSIFY), body)

    @app.post("/", summary="TEI: /embed for an embedding model, /predict for a classifier")
    async def root(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise ApiError(400, "the body is not valid JSON") from None
        named = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
        service = models.pick(named, EMBED)
        head = service.model.manifest.head
        try:
            if head is not None and head.kind is HeadKind.SEQUENCE_CLASSIFICATION:
                return await _predict(service, PredictRequest.model_validate(body))
            return await _embed(service, EmbedRequest.model_validate(body))
        except ValidationError as exc:  # answered as the typed routes answer a bad body
            raise RequestValidationError(exc.errors()) from None

    @app.post("/tokenize", summary="TEI: tokens with ids and character offsets")
    async def tokenize(body: TokenizeRequest) -> Response:
        service = models.pick(body.model)
        model = service.model
        texts = service.texts(body.inputs)
        try:
            prefix = model.prompt_text(body.prompt_name) if body.prompt_name is not None else ""
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
        items = [prefix + text for text in texts]
        encodings = model.tokenizer.tokenize(items, body.add_special_tokens)
        out = []
        for text, encoding in zip(items, encodings):
            tokens = []
            for token_id, token, special, (start, stop) in zip(
                encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets
            ):
                shown = token if special else text[start:stop]
                tokens.append(
                    {
                        "id": token_id,
                        "text": shown,
                        "special": bool(special),
                        "start": None if special else start,
                        "stop": None if special else stop,
                    }
                )
            out.append(tokens)
        return json_response(out)

    @app.post("/decode", summary="TEI: token ids back to text")
    async def decode(body: DecodeRequest) -> Response:
        model = models.pick(body.model).model
        batches = body.ids if body.ids and isinstance(body.ids[0], list) else [body.ids]
        size = model.tokenizer.vocab_size
        for ids in batches:
            bad = [i for i in ids if not 0 <= i < size]  # type: ignore[operator]
            if bad:
                raise ApiError(400, f"token id {bad[0]} is out of this vocabulary (0 … {size - 1})")
        return json_response(model.tokenizer.decode(batches, body.skip_special_tokens))  # type: ignore[arg-type]


async def _embed(service: Service, body: Any) -> Response:
    texts = service.texts(body.inputs)
    recipe = service.recipe(lambda: _options(body, SENTENCE), SENTENCE)
    vectors, _ = await service.run(recipe, texts, truncate=body.truncate)
    return json_response([vector_json(v, body.encoding_format) for v in vectors])


async def _predict(service: Service, body: PredictRequest) -> Response:
    head = service.head(HeadKind.SEQUENCE_CLASSIFICATION, "predict")
    single, items = _predict_inputs(body.inputs)
    logits, _ = await service.run(LOGITS_KEEPING_END if _keep_end(body) else LOGITS, items, truncate=body.truncate)
    matrix = np.stack(logits)
    if body.raw_scores:
        scores = matrix
    elif matrix.shape[1] == 1:  # one output (a cross-encoder): its sigmoid, as TEI and sentence-transformers give it
        scores = 1.0 / (1.0 + np.exp(-matrix.astype(np.float64)))
    else:
        scores = probabilities(matrix, head.problem_type)
    rows = [
        [{"label": head.labels[i], "score": float(row[i])} for i in np.argsort(-row, kind="stable")] for row in scores
    ]
    return json_response(rows[0] if single else rows)


def _predict_inputs(inputs: str | list[str] | list[list[str]]) -> tuple[bool, list[Any]]:
    """TEI's reading: a text; ["a", "b"] is one pair; a longer list is a batch of texts; a list of lists a batch
    of pairs (or one-text lists)."""
    if isinstance(inputs, str):
        return True, [inputs]
    if not inputs:
        raise ApiError(400, "inputs is empty: send at least one text")
    if all(isinstance(item, str) for item in inputs):
        return (True, [tuple(inputs)]) if len(inputs) == 2 else (False, list(inputs))
    items: list[Any] = []
    for index, item in enumerate(inputs):
        if not isinstance(item, list) or len(item) not in (1, 2):
            raise ApiError(400, f"inputs[{index}] must be a text or a [text_a, text_b] pair")
        items.append(item[0] if len(item) == 1 else (item[0], item[1]))
    return False, items


def _keep_end(body: Any) -> bool:
    """TEI's `truncation_direction`: "Left" cuts a long input at its start, keeping its end."""
    return str(body.truncation_direction).lower() == "left"


def _options(body: Any, kind: str) -> EncodeOptions:
    """The request's options, TEI's truncation direction included (Left is long_texts='truncate_left')."""
    options = options_of(body, kind)
    if not _keep_end(body):
        return options
    if options.long_texts is not LongTexts.TRUNCATE:
        raise ApiError(
            400,
            f'truncation_direction "Left" truncates, and long_texts "{options.long_texts.value}" asks for '
            "something else: send one of them",
        )
    return replace(options, long_texts=LongTexts.TRUNCATE_LEFT)
