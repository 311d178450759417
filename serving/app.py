"""The HTTP API of `bertx serve`: OpenAI-style embeddings plus bertx's own outputs, on FastAPI.

Routes: `POST /v1/embeddings` (OpenAI's request and response), `POST /embed` (any pooling, layers and
combination), `POST /embed/tokens`, `POST /embed/words`, `GET /health`, `/ready`, `/info` and
`/metrics` (Prometheus). Every request body is validated against the OpenAPI schema (`/openapi.json`);
unknown fields are refused. Errors are JSON, `{"error": {"message", "type", "code"}}`, and the server
keeps serving after each one.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, cast

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertx import __version__
from bertx.errors import BertxError
from bertx.layers import parse_layers
from bertx.model import Model, TruncationWarning
from bertx.tokenization import check_texts

from .batcher import Batcher, Overloaded, RoundStats
from .server import ServerSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_ROUTES = ("/health", "/ready")  # answered without the API key, for load balancers and probes
ROUTES = ("/v1/embeddings", "/embed", "/embed/tokens", "/embed/words", "/health", "/ready", "/info", "/metrics")
WARM_UP = ["warm-up", "A longer sentence to warm up the model with more than a handful of tokens in it."]


class ApiError(Exception):
    """An error the client caused or must wait out; becomes a JSON error response."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", retry_after: int = 0) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after = status, message, kind, retry_after


# ---- request schemas ------------------------------------------------------------------------------

Texts = Annotated[str | list[str], Field(description="One text or a list of texts.")]
Encoding = Literal["float", "base64"]
Layers = Annotated[
    int | list[int] | str | None,
    Field(description='Hidden states: an index (-1: last layer), a list, "2:5", "last4", "all", "all+embeddings".'),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAIEmbeddingRequest(_Strict):
    """OpenAI's embeddings request. `input` as token ids is not supported: send text."""

    input: Texts
    model: str | None = None
    encoding_format: Encoding = "float"
    dimensions: int | None = Field(default=None, gt=0)
    user: str | None = None
    prompt_name: str | None = Field(
        default=None, description="bertx: one of the model's prompts (GET /info) [its default prompt, if any]."
    )


class _LayerOptions(_Strict):
    layers: Layers = None
    combine: Literal["mean", "sum", "concat", "weighted"] = "mean"
    layer_weights: list[float] | None = None
    long_texts: Literal["truncate", "chunk"] = "truncate"
    chunk_overlap: int = Field(default=32, ge=0)
    chunk_window: int | None = Field(default=None, gt=0)


class EmbedRequest(_LayerOptions):
    """Sentence vectors with the runtime's options (see `Model.encode`)."""

    inputs: Texts
    pooling: Literal["cls", "mean", "max", "mean_sqrt_len", "first_last_avg"] | None = None
    pool_before_combine: bool = False
    normalize: bool | None = None
    encoding_format: Encoding = "float"
    prompt_name: str | None = Field(default=None, description="One of the model's prompts (GET /info) [default].")
    prompt: str | None = Field(default=None, description='A prompt text of your own instead; "" for none.')


class TokensRequest(_LayerOptions):
    """Token vectors, with the tokens and their character offsets (see `Model.encode_tokens`)."""

    inputs: Texts


class WordsRequest(_LayerOptions):
    """Word vectors: sub-word pieces merged back into words (see `Model.encode_words`)."""

    inputs: str | list[str] | list[list[str]] = Field(description="Texts, or texts given as lists of words.")
    merge: Literal["mean", "first", "last", "max"] = "mean"


# ---- metrics --------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics of one server, in their own registry."""

    def __init__(self, batcher: Batcher) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("bertx_requests", "HTTP requests by route and status.", ["route", "status"], registry=r)
        self.latency = Histogram(
            "bertx_request_seconds",
            "Request latency by route.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_texts = Histogram(
            "bertx_batch_texts", "Texts per batching round.", buckets=tuple(2**i for i in range(12)), registry=r
        )
        self.batch_tokens = Histogram(
            "bertx_batch_tokens", "Tokens per batching round.", buckets=tuple(2**i for i in range(4, 18)), registry=r
        )
        self.batch_requests = Histogram(
            "bertx_batch_requests", "Request parts coalesced per round.", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.round_seconds = Histogram("bertx_batch_seconds", "Inference time per round.", registry=r)
        self.tokens = Counter("bertx_tokens", "Tokens embedded.", registry=r)
        self.truncated = Counter("bertx_truncated_texts", "Texts cut to the model's max length.", registry=r)
        queue_texts = Gauge("bertx_queue_texts", "Texts accepted and waiting to run.", registry=r)
        queue_texts.set_function(lambda: batcher.queued_texts)
        queue_tokens = Gauge("bertx_queue_tokens", "Tokens accepted and waiting to run.", registry=r)
        queue_tokens.set_function(lambda: batcher.queued_tokens)

    def on_round(self, stats: RoundStats) -> None:
        self.batch_texts.observe(stats.texts)
        self.batch_tokens.observe(stats.tokens)
        self.batch_requests.observe(stats.requests)
        self.round_seconds.observe(stats.seconds)


# ---- the application ------------------------------------------------------------------------------


class Server:
    """The model, the batcher and the metrics behind one app."""

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
        """In the batcher's thread: one call of the model for every queued item with these options."""
        kind, options = cast(tuple[str, tuple[tuple[str, Any], ...]], key)
        kwargs = _unfrozen(dict(options))
        if kind == "embed":
            return list(self.model.encode(items, convert_to_numpy=True, **kwargs))
        if kind == "tokens":
            return self.model.encode_tokens(items, **kwargs)
        return self.model.encode_words(items, **kwargs)

    async def warm_up(self) -> None:
        """Run the model once through the batcher, then report ready."""
        await self.batcher.submit(("embed", ()), WARM_UP, [len(t.split()) + 2 for t in WARM_UP])
        self.ready = True

    def token_counts(self, texts: Sequence[Any], chunked: bool, words: bool = False) -> list[int]:
        """Tokens each text costs (special tokens included; every window when chunked)."""
        tokenizer = self.model.tokenizer
        if words:
            encodings = tokenizer.encode_words(texts)
        elif chunked:
            encodings = tokenizer.encode_windows(texts, 0)
            return [len(e.ids) + sum(len(o.ids) for o in e.overflowing) for e in encodings]
        else:
            encodings = tokenizer.encode(texts)
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            self.metrics.truncated.inc(truncated)
        return [len(e.ids) for e in encodings]

    async def run(
        self, kind: str, texts: Sequence[Any], options: dict[str, Any], chunked: bool
    ) -> tuple[list[Any], int]:
        """Results for `texts` and the tokens they cost, through the batcher."""
        if not self.ready:
            raise ApiError(503, "the model is still warming up", "unavailable", retry_after=1)
        try:
            counted = texts
            if kind == "embed":
                # Count the tokens the model will see: the prompt's too.
                prefix = self.model.prompt_text(options.get("prompt_name"), options.get("prompt"))
                counted = [prefix + text for text in texts] if prefix else texts
            counts = self.token_counts(
                counted,
                chunked,
                words=kind == "words" and bool(texts) and isinstance(texts[0], list),
            )
            # Options are checked here, on no texts, so a bad one is the caller's 400, not a failed batch.
            self._check_options(kind, _unfrozen(options))
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
        key = (kind, tuple(sorted(options.items(), key=lambda item: item[0])))
        try:
            results = await self.batcher.submit(key, texts, counts)
        except Overloaded as exc:
            raise ApiError(503, str(exc), "overloaded", retry_after=exc.retry_after) from None
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
        self.metrics.tokens.inc(sum(counts))
        return results, sum(counts)

    def _check_options(self, kind: str, options: dict[str, Any]) -> None:
        if kind == "embed":
            self.model.encode([], **options)
        elif kind == "tokens":
            self.model.encode_tokens([], **options)
        else:
            self.model.encode_words([], **options)

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


def create_app(model: Model, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving `model` (see `bertx.serving.create_app`)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    # Truncation is counted per request (bertx_truncated_texts_total), not warned about per batch: a
    # process-wide filter, since warnings.catch_warnings is not safe across the server's threads.
    warnings.filterwarnings("ignore", category=TruncationWarning)
    server = Server(model, settings or ServerSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.batcher.start()
        warming = asyncio.get_running_loop().create_task(server.warm_up())
        try:
            yield
        finally:
            if not warming.done():
                await warming
            await server.batcher.close()  # everything accepted runs before the process exits

    app = FastAPI(
        title="bertx",
        version=__version__,
        summary="BERT-family embeddings: OpenAI-compatible, plus any layer, token and word vectors.",
        lifespan=lifespan,
    )
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message, exc.kind, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "the body is not valid JSON")
        return _error(422, "; ".join(_describe(e) for e in errors[:5]))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(
            exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "invalid_request_error"
        )

    @app.post("/v1/embeddings", summary="OpenAI-compatible embeddings")
    async def openai_embeddings(body: OpenAIEmbeddingRequest) -> Response:
        texts = server.texts(body.input)
        width = model.hidden_size
        if body.dimensions is not None and body.dimensions != width:
            raise ApiError(
                400, f"this model's vectors have {width} dimensions and it was not trained to be cut shorter"
            )
        vectors, tokens = await server.run("embed", texts, {"prompt_name": body.prompt_name}, chunked=False)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json({"object": "list", "data": data, "model": server.name, "usage": usage})

    @app.post("/embed", summary="Sentence vectors with any pooling, layers and combination")
    async def embed(body: EmbedRequest) -> Response:
        texts = server.texts(body.inputs)
        options = {
            "pooling": body.pooling,
            "normalize_embeddings": body.normalize,
            "pool_before_combine": body.pool_before_combine,
            "prompt_name": body.prompt_name,
            "prompt": body.prompt,
            **_layer_options(body),
        }
        vectors, tokens = await server.run("embed", texts, options, chunked=body.long_texts == "chunk")
        embeddings = [_vector(v, body.encoding_format) for v in vectors]
        return _json({"model": server.name, "embeddings": embeddings, "usage": {"prompt_tokens": tokens}})

    @app.post("/embed/tokens", summary="Token vectors with tokens and character offsets")
    async def embed_tokens(body: TokensRequest) -> Response:
        texts = server.texts(body.inputs)
        results, tokens = await server.run("tokens", texts, _layer_options(body), chunked=body.long_texts == "chunk")
        out = [
            {
                "tokens": list(r.tokens),
                "offsets": [list(o) for o in r.offsets],
                "special": [bool(s) for s in r.special],
                "vectors": r.vectors.tolist(),
            }
            for r in results
        ]
        return _json({"model": server.name, "results": out, "usage": {"prompt_tokens": tokens}})

    @app.post("/embed/words", summary="Word vectors: sub-word pieces merged back into words")
    async def embed_words(body: WordsRequest) -> Response:
        texts = server.texts(body.inputs)
        options = {"merge": body.merge, **_layer_options(body)}
        results, tokens = await server.run("words", texts, options, chunked=body.long_texts == "chunk")
        out = [
            {"words": list(r.words), "spans": [list(span) for span in r.spans], "vectors": r.vectors.tolist()}
            for r in results
        ]
        return _json({"model": server.name, "results": out, "usage": {"prompt_tokens": tokens}})

    @app.get("/health", summary="The process is up")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready", summary="The model is loaded and warmed up")
    async def ready() -> Response:
        if not server.ready:
            return _json({"status": "warming up"}, 503)
        return _json({"status": "ready"})

    @app.get("/info", summary="The model and the server's limits")
    async def info() -> Response:
        manifest = model.manifest
        arch = manifest.architecture
        return _json(
            {
                "model": server.name,
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
                    "max_inputs": server.settings.max_inputs,
                    "max_body_bytes": server.settings.max_body_bytes,
                    "max_batch_tokens": server.settings.batch.max_batch_tokens,
                    "max_wait_ms": server.settings.batch.max_wait_ms,
                    "max_queue_tokens": server.settings.batch.max_queue_tokens,
                },
            }
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        return _error(500, f"the server failed on this request: {type(exc).__name__}", "server_error")

    app.add_middleware(_Guard, server=server)
    return app


class _Guard:
    """ASGI layer around every route: the API key, the body size limit, and request metrics."""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "other"
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                await refusal(scope, receive, sending)
                return
            body = await self._read_body(scope, receive)
            if body is None:
                limit = self.server.settings.max_body_bytes
                await _error(413, f"the body is over this server's limit of {limit} bytes")(scope, receive, sending)
                return
            await self.app(scope, _replay(body, receive), sending)
        finally:
            metrics = self.server.metrics
            metrics.requests.labels(route, str(status[0])).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope, path: str) -> Response | None:
        headers = dict(scope.get("headers") or [])
        key = self.server.settings.api_key
        if key is None or path in OPEN_ROUTES:
            return self._unsupported(scope, headers)
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        # compare_digest takes the same time wherever the strings differ; the key is never logged.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), key.encode()):
            response = _error(401, "a valid API key is required: Authorization: Bearer KEY", "authentication_error")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return self._unsupported(scope, headers)

    @staticmethod
    def _unsupported(scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        """415 for a POST whose body is not declared JSON (curl's default form type included)."""
        if scope["method"] != "POST":
            return None
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind == b"application/json" or kind.endswith(b"+json"):
            return None
        shown = kind.decode("latin-1") or "none"
        return _error(415, f"send the body as JSON with Content-Type: application/json (got {shown})")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole request body, or None when it is over the limit (read no further than that)."""
        limit = self.server.settings.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would send it

    return replay


def _layer_options(body: _LayerOptions) -> dict[str, Any]:
    layers: Any = body.layers
    if isinstance(body.layers, str):
        try:
            layers = parse_layers(body.layers)
        except BertxError as exc:
            raise ApiError(400, str(exc)) from None
    if isinstance(layers, list):
        layers = tuple(layers)  # hashable, for the batching key
    elif isinstance(layers, slice):
        layers = ("slice", layers.start, layers.stop, layers.step)
    return {
        "layers": layers,
        "combine": body.combine,
        "layer_weights": tuple(body.layer_weights) if body.layer_weights is not None else None,
        "long_texts": body.long_texts,
        "chunk_overlap": body.chunk_overlap,
        "chunk_window": body.chunk_window,
    }


def _unfrozen(options: dict[str, Any]) -> dict[str, Any]:
    """The model's keyword arguments from a batching key's options (a slice travels as a tuple)."""
    layers = options.get("layers")
    if isinstance(layers, tuple) and layers and layers[0] == "slice":
        return {**options, "layers": slice(*layers[1:])}
    return options


def _vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # OpenAI's: little-endian float32 bytes
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    values: list[float] = np.asarray(vector, dtype=np.float32).tolist()
    return values


def _json(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content, separators=(",", ":")), status_code=status, media_type="application/json")


def _error(status: int, message: str, kind: str = "invalid_request_error", retry_after: int = 0) -> Response:
    response = JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    return f"{where}: {error.get('msg', 'invalid')}"
