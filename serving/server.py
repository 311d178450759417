"""Settings, the app factory and `serve`: light to import; FastAPI and uvicorn load when used."""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertx.errors import MissingDependencyError, OptionError
from bertx.loading import LoadOptions

from .settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bertx.model import Model

INSTALL = "pip install 'bertx[serve]'"
_NEEDS = ("fastapi", "uvicorn", "prometheus_client")


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


def create_app(models: Model | Mapping[str, Model], settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving one model, or several by name: run it with any ASGI server (`serve` uses uvicorn).

    Each model has its own batching queue and metrics labels; a request's `model` picks one (see
    `bertx.serving.models`). The models are warmed up once the app starts (`/ready` answers 503 until then);
    on shutdown every accepted request is run before the app's lifespan ends.
    """
    require_extra()
    from .app import create_app as build

    return build(models, settings)


PathLike = str | os.PathLike[str]
Artifacts = PathLike | Sequence[PathLike | tuple[str, PathLike]] | Mapping[str, PathLike]


def load_models(artifacts: Artifacts, load: LoadOptions, settings: ServerSettings) -> dict[str, Model]:
    """The models a server holds, by the names requests give them: a mapping's keys or a pair's name, else the
    artifact's source id (or `settings.model_name` for a single artifact).

    Raises:
        OptionError: two models would have one name. ArtifactError and the other `Model.load` errors.
    """
    from bertx.model import Model

    if isinstance(artifacts, Mapping):
        named: list[tuple[str | None, PathLike]] = list(artifacts.items())
    elif isinstance(artifacts, (str, os.PathLike)):
        named = [(None, artifacts)]
    else:
        named = [item if isinstance(item, tuple) else (None, item) for item in artifacts]
    if settings.model_name is not None and len(named) > 1:
        raise OptionError("--model-name names a single model: name each of several as NAME=PATH")
    models: dict[str, Model] = {}
    for given, path in named:
        model = Model.load(path, load)
        name = given or settings.model_name or model.manifest.source.id
        if name in models:
            raise OptionError(f"two models are named {name!r}: name them NAME=PATH")
        models[name] = model
    return models


def serve(
    artifact: Artifacts,
    load: LoadOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    settings: ServerSettings | None = None,
    log_level: str = "info",
    graceful_timeout: int = 60,
    **uvicorn_options: Any,
) -> None:
    """Load `artifact` (one, a list, or a mapping of names to artifacts; as `load` says: variant, device,
    threads, batch_tokens, …) and serve it over HTTP until SIGTERM or SIGINT.

    On either signal the server stops accepting connections, finishes every request in flight (for
    at most `graceful_timeout` seconds) and returns.

    Raises:
        MissingDependencyError: the `serve` extra is not installed. ArtifactError and the other
            `Model.from_pretrained` errors: before anything listens.
    """
    require_extra()
    import uvicorn

    settings = settings or ServerSettings()
    app = create_app(load_models(artifact, load or LoadOptions(), settings), settings)
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
