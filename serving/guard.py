"""The ASGI layer around every route: the API key, the declared content type, the body size limit and the
request metrics; and the JSON error responses every part of the server answers with."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse, Response

from .models import Models

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_ROUTES = ("/health", "/ready")  # answered without the API key, for load balancers and probes
# text-embeddings-inference's routes answer errors in TEI's body; the others in OpenAI's.
TEI_ROUTES = ("/", "/embed", "/embed_all", "/rerank", "/predict", "/tokenize", "/decode")
OPENAI_ROUTES = ("/v1/embeddings", "/v1/models", "/v1/rerank")
ROUTES = (
    *TEI_ROUTES,
    *OPENAI_ROUTES,
    "/embed/tokens",
    "/embed/words",
    "/embed/chunks",
    "/health",
    "/ready",
    "/info",
    "/metrics",
)
ALLOWED = "GET, HEAD, POST, OPTIONS"


class Guard:
    """ASGI layer around every route: the API key, the body size limit, and request metrics."""

    def __init__(self, app: ASGIApp, server: Models) -> None:
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

        tei = path in TEI_ROUTES
        try:
            if scope["method"] == "OPTIONS":  # a CORS preflight or a client asking what the route takes
                await Response(status_code=204, headers={"Allow": ALLOWED})(scope, receive, sending)
                return
            refusal = self._refusal(scope, path, tei)
            if refusal is not None:
                await refusal(scope, receive, sending)
                return
            timeout = self.server.settings.read_timeout_s
            try:
                body = await asyncio.wait_for(self._read_body(scope, receive), timeout)
            except TimeoutError:
                message = f"the request body did not arrive within {timeout:g} s"
                await error_response(408, message, tei=tei)(scope, receive, sending)
                return
            if body is None:
                limit = self.server.settings.max_body_bytes
                message = f"the body is over this server's limit of {limit} bytes"
                await error_response(413, message, tei=tei)(scope, receive, sending)
                return
            await self.app(scope, _replay(body, receive), sending)
        finally:
            metrics = self.server.metrics
            metrics.requests.labels(route, str(status[0])).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope, path: str, tei: bool) -> Response | None:
        headers = dict(scope.get("headers") or [])
        key = self.server.settings.api_key
        if key is None or path in OPEN_ROUTES:
            return self._unsupported(scope, headers, tei)
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        # compare_digest takes the same time wherever the strings differ; the key is never logged.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), key.encode()):
            response = error_response(
                401, "a valid API key is required: Authorization: Bearer KEY", "authentication_error"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return self._unsupported(scope, headers, tei)

    @staticmethod
    def _unsupported(scope: Scope, headers: dict[bytes, bytes], tei: bool) -> Response | None:
        """415 for a POST whose body is not declared JSON (curl's default form type included)."""
        if scope["method"] != "POST":
            return None
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind == b"application/json" or kind.endswith(b"+json"):
            return None
        shown = kind.decode("latin-1") or "none"
        return error_response(415, f"send the body as JSON with Content-Type: application/json (got {shown})", tei=tei)

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


def json_response(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content, separators=(",", ":")), status_code=status, media_type="application/json")


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    retry_after: int = 0,
    tei: bool = False,
    code: str | None = None,
) -> Response:
    """An error in OpenAI's body, `{"error": {"message", "type", "code"}}` (`code` the status unless named), or
    text-embeddings-inference's, `{"error": message, "error_type": type}`."""
    body: dict[str, Any] = (
        {"error": message, "error_type": kind}
        if tei
        else {"error": {"message": message, "type": kind, "code": status if code is None else code}}
    )
    response = JSONResponse(body, status_code=status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    return f"{where}: {error.get('msg', 'invalid')}"


def vector_json(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # OpenAI's: little-endian float32 bytes
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    values: list[float] = np.asarray(vector, dtype=np.float32).tolist()
    return values
