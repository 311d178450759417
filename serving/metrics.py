"""Prometheus metrics of one server, in their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .batcher import Batcher, RoundStats


class Metrics:
    """Request, batching-round and queue metrics."""

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
        self.calls = Counter(
            "bertx_model_calls", "Model calls: one per round and distinct computation in it.", registry=r
        )
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
        self.calls.inc(stats.calls)
