"""Prometheus metrics of one server, in their own registry: requests by route, and batching rounds, queues and
tokens by model (label `model`), so each model a server holds is seen apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .batcher import Batcher, RoundStats


class Metrics:
    """The server's metric families; `for_model` binds the per-model ones to one model's name and queue."""

    def __init__(self) -> None:
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
        by_model = ["model"]
        self.batch_texts = Histogram(
            "bertx_batch_texts",
            "Texts per batching round.",
            by_model,
            buckets=tuple(2**i for i in range(12)),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "bertx_batch_tokens",
            "Tokens per batching round.",
            by_model,
            buckets=tuple(2**i for i in range(4, 18)),
            registry=r,
        )
        self.batch_requests = Histogram(
            "bertx_batch_requests",
            "Request parts coalesced per round.",
            by_model,
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.round_seconds = Histogram("bertx_batch_seconds", "Inference time per round.", by_model, registry=r)
        self.calls = Counter(
            "bertx_model_calls", "Model calls: one per round and distinct computation in it.", by_model, registry=r
        )
        self.tokens = Counter("bertx_tokens", "Tokens embedded.", by_model, registry=r)
        self.truncated = Counter("bertx_truncated_texts", "Texts cut to the model's max length.", by_model, registry=r)
        self.queue_texts = Gauge("bertx_queue_texts", "Texts accepted and waiting to run.", by_model, registry=r)
        self.queue_tokens = Gauge("bertx_queue_tokens", "Tokens accepted and waiting to run.", by_model, registry=r)

    def for_model(self, name: str, batcher: Batcher) -> ModelMetrics:
        return ModelMetrics(self, name, batcher)


class ModelMetrics:
    """One model's rounds, tokens and queue."""

    def __init__(self, families: Metrics, name: str, batcher: Batcher) -> None:
        self._families = families
        self.name = name
        self.tokens = families.tokens.labels(model=name)
        self.truncated = families.truncated.labels(model=name)
        families.queue_texts.labels(model=name).set_function(lambda: batcher.queued_texts)
        families.queue_tokens.labels(model=name).set_function(lambda: batcher.queued_tokens)

    def on_round(self, stats: RoundStats) -> None:
        f, name = self._families, self.name
        f.batch_texts.labels(model=name).observe(stats.texts)
        f.batch_tokens.labels(model=name).observe(stats.tokens)
        f.batch_requests.labels(model=name).observe(stats.requests)
        f.round_seconds.labels(model=name).observe(stats.seconds)
        f.calls.labels(model=name).inc(stats.calls)
