"""The HTTP API of `bertx serve`, on FastAPI: OpenAI's routes (`openai_api`), text-embeddings-inference's
(`tei`), and bertx's own: `POST /embed/tokens`, `POST /embed/words`, `GET /health`, `/ready`, `/info` and
`/metrics` (Prometheus).

Every request body is validated against the OpenAPI schema (`/openapi.json`); unknown fields are refused.
Errors are JSON, `{"error": {"message", "type", "code"}}` (TEI's body on TEI's routes), and the server keeps
serving after each one. The schemas are in `schemas`, the models and which one a request goes to in
`models`, each model's batcher in `service`, the API key and size limits in `guard`.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertx import __version__
from bertx.errors import BertxError
from bertx.late_chunking import check_chunks
from bertx.manifest import HeadKind
from bertx.model import Model, TruncationWarning
from bertx.options import CHUNKS, TOKENS, WORDS

from .guard import TEI_ROUTES, Guard, describe, error_response, json_response
from .models import Models
from .openai_api import add_openai_routes
from .schemas import ChunksRequest, TokensRequest, WordsRequest, options_of
from .service import ApiError, Service
from .settings import ServerSettings
from .tei import add_tei_routes


def create_app(models: Model | Mapping[str, Model], settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving `models` (see `bertx.serving.create_app`)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    # Truncation is counted per request (bertx_truncated_texts_total), not warned about per batch: a
    # process-wide filter, since warnings.catch_warnings is not safe across the server's threads.
    warnings.filterwarnings("ignore", category=TruncationWarning)
    settings = settings or ServerSettings()
    if isinstance(models, Model):
        models = {settings.model_name or models.manifest.source.id: models}
    served = Models(models, settings)
    services = list(served.services.values())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for service in services:
            service.batcher.start()
        warming = asyncio.get_running_loop().create_task(_warm_up(services))
        try:
            yield
        finally:
            if not warming.done():
                await warming
            for service in services:  # everything accepted runs before the process exits
                await service.batcher.close()

    app = FastAPI(
        title="bertx",
        version=__version__,
        summary="BERT-family embeddings: OpenAI-compatible, plus any layer, token and word vectors.",
        lifespan=lifespan,
    )
    app.state.server = served

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.kind, exc.retry_after, tei=_tei(request), code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "the body is not valid JSON", tei=_tei(request))
        token_ids = request.url.path == "/v1/embeddings" and any(_token_ids(e) for e in errors)
        if token_ids:
            return error_response(
                400,
                "input as token ids is not supported: send the texts. LangChain's OpenAIEmbeddings sends token ids "
                "by default; create it with check_embedding_ctx_length=False",
            )
        return error_response(422, "; ".join(describe(e) for e in errors[:5]), tei=_tei(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind, tei=_tei(request))

    add_openai_routes(app, served)

    @app.post("/embed/tokens", summary="Token vectors with tokens and character offsets")
    async def embed_tokens(body: TokensRequest) -> Response:
        service = served.pick(body.model)  # type: ignore[attr-defined]
        texts = service.texts(body.inputs)  # type: ignore[attr-defined]
        recipe = service.recipe(lambda: options_of(body, TOKENS), TOKENS)
        results, tokens = await service.run(recipe, texts)
        out = [
            {
                "tokens": list(r.tokens),
                "offsets": [list(o) for o in r.offsets],
                "special": [bool(s) for s in r.special],
                "vectors": r.vectors.tolist(),
            }
            for r in results
        ]
        return json_response({"model": service.name, "results": out, "usage": {"prompt_tokens": tokens}})

    @app.post("/embed/words", summary="Word vectors: sub-word pieces merged back into words")
    async def embed_words(body: WordsRequest) -> Response:
        service = served.pick(body.model)  # type: ignore[attr-defined]
        texts = service.texts(body.inputs)  # type: ignore[attr-defined]
        recipe = service.recipe(lambda: options_of(body, WORDS), WORDS)
        results, tokens = await service.run(recipe, texts)
        out = [
            {"words": list(r.words), "spans": [list(span) for span in r.spans], "vectors": r.vectors.tolist()}
            for r in results
        ]
        return json_response({"model": service.name, "results": out, "usage": {"prompt_tokens": tokens}})

    @app.post("/embed/chunks", summary="Late chunking: chunk vectors pooled from the whole text's token vectors")
    async def embed_chunks(body: ChunksRequest) -> Response:
        service = served.pick(body.model)  # type: ignore[attr-defined]
        texts = service.texts(body.inputs)  # type: ignore[attr-defined]
        recipe = service.recipe(lambda: options_of(body, CHUNKS), CHUNKS)
        spans = body.spans  # type: ignore[attr-defined]
        items: list[Any] = texts
        if spans is not None:
            if len(spans) != len(texts):
                raise ApiError(400, f"spans has {len(spans)} lists for {len(texts)} inputs: give one per input")
            try:
                items = await asyncio.to_thread(check_chunks, service.model.tokenizer, texts, spans, recipe)
            except BertxError as exc:
                raise ApiError(400, str(exc)) from None
        results, tokens = await service.run(recipe, items)
        out = [
            {"chunks": list(r.chunks), "spans": [list(span) for span in r.spans], "vectors": r.vectors.tolist()}
            for r in results
        ]
        return json_response({"model": service.name, "results": out, "usage": {"prompt_tokens": tokens}})

    add_tei_routes(app, served)

    # HEAD answers as GET does, kept out of the schema (one operation id per route and method there).
    @app.get("/health", summary="The process is up")
    @app.head("/health", include_in_schema=False)
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready", summary="The model is loaded and warmed up")
    @app.head("/ready", include_in_schema=False)
    async def ready() -> Response:
        if not served.ready:
            return json_response({"status": "warming up"}, 503)
        return json_response({"status": "ready"})

    @app.get("/info", summary="The model and the server's limits")
    async def info() -> Response:
        body = _info(served.default)
        if len(services) > 1:
            body["models"] = {service.name: _info(service) for service in services}
        return json_response(body)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(served.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        message = f"the server failed on this request: {type(exc).__name__}"
        return error_response(500, message, "server_error", tei=_tei(request))

    app.add_middleware(Guard, server=served)
    return app


async def _warm_up(services: list[Service]) -> None:
    for service in services:
        await service.warm_up()


def _tei(request: Request) -> bool:
    """Whether the route speaks text-embeddings-inference's error body."""
    return request.url.path in TEI_ROUTES


def _token_ids(error: Any) -> bool:
    """A validation error of `input` where integers were sent (OpenAI's token-id input)."""
    location = error.get("loc", ())
    return len(location) >= 2 and location[1] == "input" and _ids(error.get("input"))


def _ids(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, list) and bool(value) and all(_ids(item) for item in value)


def _info(service: Service) -> dict[str, Any]:
    """bertx's facts about a model and the server, with text-embeddings-inference's /info fields beside them."""
    model, settings = service.model, service.settings
    manifest = model.manifest
    arch = manifest.architecture
    head = manifest.head
    if head is None:
        model_type: dict[str, Any] = {"embedding": {"pooling": manifest.defaults.pooling.value}}
    else:
        labels = dict(enumerate(head.labels))
        kind = "reranker" if head.kind is HeadKind.SEQUENCE_CLASSIFICATION and len(head.labels) == 1 else "classifier"
        model_type = {kind: {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}}
    return {
        "model": service.name,
        "bertx": __version__,
        "variant": model.variant.precision.value,
        "device": model.device.value,
        "architecture": {
            "type": arch.model_type,
            "layers": arch.num_layers,
            "hidden_size": arch.hidden_size,
            "max_seq_length": model.max_seq_length,
        },
        "defaults": {"pooling": manifest.defaults.pooling.value, "normalize": manifest.defaults.normalize},
        "prompts": dict(manifest.prompts.named),
        "default_prompt_name": manifest.prompts.default_name,
        "limits": {
            "max_inputs": settings.max_inputs,
            "max_body_bytes": settings.max_body_bytes,
            "max_request_chars": settings.max_request_chars,
            "max_batch_tokens": settings.batch.max_batch_tokens,
            "max_wait_ms": settings.batch.max_wait_ms,
            "max_queue_tokens": settings.batch.max_queue_tokens,
        },
        # text-embeddings-inference's names for the same facts
        "model_id": service.name,
        "model_sha": manifest.source.sha256,
        "model_dtype": model.variant.precision.value,
        "model_type": model_type,
        "max_input_length": model.max_seq_length,
        "max_batch_tokens": settings.batch.max_batch_tokens,
        "max_client_batch_size": settings.max_inputs,
        "max_concurrent_requests": None,
        "tokenization_workers": 1,
        "version": __version__,
    }
