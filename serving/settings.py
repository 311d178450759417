"""The limits and identity of one server."""

from __future__ import annotations

from dataclasses import dataclass, field

from bertx.errors import OptionError

from .batcher import BatchSettings


@dataclass(frozen=True)
class ServerSettings:
    """Limits and identity of one server.

    Attributes:
        batch: How concurrent requests are coalesced (see `BatchSettings`).
        max_inputs: Most texts one request may send (413 beyond).
        max_body_bytes: Largest request body (413 beyond).
        api_key: When set, every route but /health and /ready needs `Authorization: Bearer KEY`.
        model_name: The name responses carry in `model` [the artifact's source id].
        max_request_chars: Most characters a request's texts may hold once a prompt is put before each (413
            beyond): bounds the work a small body can ask for.
        read_timeout_s: Longest wait for the rest of a request body (408 beyond), so a slow client cannot hold
            a connection forever.
    """

    batch: BatchSettings = field(default_factory=BatchSettings)
    max_inputs: int = 2048
    max_body_bytes: int = 8 * 1024 * 1024
    api_key: str | None = field(default=None, repr=False)
    model_name: str | None = None
    max_request_chars: int = 8 * 1024 * 1024
    read_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.read_timeout_s > 0:
            raise OptionError(f"read_timeout_s must be positive, got {self.read_timeout_s!r}")
        for name in ("max_inputs", "max_body_bytes", "max_request_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise OptionError("the API key is empty")
