"""Settings, the app factory and `serve`: light to import; FastAPI and uvicorn load when used."""

from __future__ import annotations

import importlib.util
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertx.errors import MissingDependencyError, OptionError

from .batcher import BatchSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bertx.model import Model

INSTALL = "pip install 'bertx[serve]'"
_NEEDS = ("fastapi", "uvicorn", "prometheus_client")


@dataclass(frozen=True)
class ServerSettings:
    """Limits and identity of one server.

    Attributes:
        batch: How concurrent requests are coalesced (see `BatchSettings`).
        max_inputs: Most texts one request may send (413 beyond).
        max_body_bytes: Largest request body (413 beyond).
        api_key: When set, every route but /health and /ready needs `Authorization: Bearer KEY`.
        model_name: The name responses carry in `model` [the artifact's source id].
    """

    batch: BatchSettings = field(default_factory=BatchSettings)
    max_inputs: int = 2048
    max_body_bytes: int = 8 * 1024 * 1024
    api_key: str | None = field(default=None, repr=False)
    model_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise OptionError("the API key is empty")


def require_extra() -> None:
    """Raise `MissingDependencyError` naming the install command unless the serving extra is installed."""
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(f"bertx serve needs {', '.join(missing)}: {INSTALL}")


def read_api_key(path: Path) -> str:
    """The API key in `path` (surrounding whitespace removed)."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"cannot read the API key file {path}: {exc}") from None
    if not key:
        raise OptionError(f"the API key file {path} is empty")
    return key


def create_app(model: Model, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving `model`: run it with any ASGI server (`serve` uses uvicorn).

    The model is warmed up once the app starts (`/ready` answers 503 until then); on shutdown every
    accepted request is run before the app's lifespan ends.
    """
    require_extra()
    from .app import create_app as build

    return build(model, settings)


def serve(
    artifact: str | os.PathLike[str],
    variant: str = "fp32",
    device: str | None = None,
    threads: int | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    settings: ServerSettings | None = None,
    batch_tokens: int | None = None,
    verify: bool = True,
    log_level: str = "info",
    graceful_timeout: int = 60,
    **uvicorn_options: Any,
) -> None:
    """Load `artifact` and serve it over HTTP until SIGTERM or SIGINT.

    On either signal the server stops accepting connections, finishes every request in flight (for
    at most `graceful_timeout` seconds) and returns.

    Raises:
        MissingDependencyError: the `serve` extra is not installed. ArtifactError and the other
            `Model.from_pretrained` errors: before anything listens.
    """
    require_extra()
    import uvicorn

    from bertx.batching import DEFAULT_BATCH_TOKENS
    from bertx.model import Model

    model = Model.from_pretrained(
        artifact,
        variant=variant,
        device=device,
        threads=threads,
        batch_tokens=DEFAULT_BATCH_TOKENS if batch_tokens is None else batch_tokens or None,
        verify=verify,
    )
    app = create_app(model, settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout,
        **uvicorn_options,
    )
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again for the handler that
    # was there before; a no-op one there makes a finished graceful shutdown exit with status 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
