"""`bertx serve`: an HTTP embedding server over one artifact (extra `bertx[serve]`).

`create_app(model)` is the ASGI app; `serve(...)` loads an artifact and runs it with uvicorn. Nothing
here is imported by `import bertx`.
"""

from __future__ import annotations

from .batcher import Batcher, BatchSettings, Overloaded
from .server import INSTALL, create_app, serve
from .settings import ServerSettings

__all__ = ["INSTALL", "BatchSettings", "Batcher", "Overloaded", "ServerSettings", "create_app", "serve"]
