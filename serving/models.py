"""The models one server holds, by name, and which one a request goes to.

With one model every request goes to it, whatever `model` it names (as a single-model server always has).
With several, a request's `model` picks one (an unknown name is a 404 in OpenAI's error shape); a request that
names none goes to the first model suited to its route: a reranker (a one-output sequence classifier) for
rerank routes, a sequence classifier for /predict, a model without a task head for embeddings; else the
first model given.
"""

from __future__ import annotations

from collections.abc import Mapping

from bertx.errors import OptionError
from bertx.manifest import HeadKind
from bertx.model import Model

from .metrics import Metrics
from .service import ApiError, Service
from .settings import ServerSettings

EMBED, RERANK, CLASSIFY = "embed", "rerank", "classify"  # what a route needs of its model


class Models:
    """Each model's `Service` (its own queue and metrics labels), the shared limits and the metric families."""

    def __init__(self, models: Mapping[str, Model], settings: ServerSettings) -> None:
        if not models:
            raise OptionError("a server needs at least one model")
        for name in models:
            if not name or not name.strip():
                raise OptionError("a model's name is empty")
        self.settings = settings
        self.metrics = Metrics()
        self.services = {name: Service(model, name, settings, self.metrics) for name, model in models.items()}
        self.default = next(iter(self.services.values()))

    @property
    def ready(self) -> bool:
        return all(service.ready for service in self.services.values())

    def pick(self, name: str | None, need: str = EMBED) -> Service:
        """The service a request naming `name` (or none) goes to, for a route that needs `need`."""
        if len(self.services) == 1:
            return self.default
        if name is not None:
            service = self.services.get(name)
            if service is None:
                raise ApiError(
                    404,
                    f"the model {name!r} is not served here; models: {', '.join(self.services)}",
                    code="model_not_found",
                )
            return service
        return next((s for s in self.services.values() if _suits(s.model, need)), self.default)


def _suits(model: Model, need: str) -> bool:
    head = model.manifest.head
    if need == EMBED:
        return head is None
    classifier = head is not None and head.kind is HeadKind.SEQUENCE_CLASSIFICATION
    return classifier and (need == CLASSIFY or len(head.labels) == 1)  # type: ignore[union-attr]
