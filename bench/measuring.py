"""Timing one engine: its settings, a warm-up and the vectors kept for accuracy, timed rounds over every
workload and batch size, and the batch-1 latency. Shared by the harness and the per-engine worker processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .engine_types import Engine

FIXED_LENGTHS = (16, 128, 512)
DEFAULTS = 0  # the batch size recorded for a run with the engine's own default settings


@dataclass(frozen=True)
class Settings:
    """What to run: workloads, batch sizes, repeats, thread budget, and how many corpus texts."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    fixed_lengths: tuple[int, ...] = FIXED_LENGTHS
    fixed_count: int = 64
    corpus_limit: int | None = None
    latency_texts: int = 200
    repeats: int = 3
    threads: int = 2
    engines: tuple[str, ...] | None = None
    process_checks: bool = True
    # Each engine in a fresh process of its own, so that no engine's thread pools, allocator state or
    # imports (torch, OpenVINO) slow down another; the processes take their timed rounds in turn.
    isolated: bool = True


@dataclass(frozen=True)
class Measured:
    """What one engine gave on every workload: corpus vectors (for accuracy), timings, latency."""

    size_bytes: int
    vectors: np.ndarray
    # workload, batch size (DEFAULTS: the engine's own settings), texts, seconds per repeat
    timings: list[tuple[str, int, int, list[float]]]
    latency_ms: dict[str, float]
    details: dict[str, str]


def measure(
    engine: Engine,
    workloads: dict[str, list[str]],
    settings: Settings,
    progress: Callable[[str], None] = lambda message: None,
) -> Measured:
    """Run one loaded engine through every workload, `settings.repeats` rounds in a row."""
    vectors, latency = prepare(engine, workloads, settings)
    rounds = [one_round(engine, workloads, settings, progress) for _ in range(settings.repeats)]
    return Measured(engine.size_bytes, vectors, merge_rounds(rounds), latency, dict(engine.details))


def prepare(engine: Engine, workloads: dict[str, list[str]], settings: Settings) -> tuple[np.ndarray, dict[str, float]]:
    """Warm an engine up and take what is measured once: its corpus vectors (at batch 32, for accuracy) and
    its batch-1 latency."""
    corpus = workloads["corpus"]
    engine.encode(corpus[:8], 8)  # warm-up: first-call allocations and lazy initialisation
    vectors = np.asarray(engine.encode(corpus, 32), dtype=np.float32)
    return vectors, _latency(engine, corpus[: settings.latency_texts])


# One timed pass: workload, batch size (DEFAULTS: the engine's own settings), texts, seconds.
Timing = tuple[str, int, int, float]


def one_round(
    engine: Engine,
    workloads: dict[str, list[str]],
    settings: Settings,
    progress: Callable[[str], None] = lambda message: None,
) -> list[Timing]:
    """Every workload at every batch size once, then the corpus with the engine's defaults."""
    timings = []
    for workload, texts in workloads.items():
        for batch in settings.batch_sizes:
            texts_here = texts[: settings.latency_texts] if batch == 1 and workload == "corpus" else texts
            progress(f"{engine.name}: {workload} at batch {batch}")
            timings.append((workload, batch, len(texts_here), _timed(engine, texts_here, batch)))
    progress(f"{engine.name}: corpus with its default settings")
    corpus = workloads["corpus"]
    timings.append(("corpus", DEFAULTS, len(corpus), _timed(engine, corpus, DEFAULTS)))
    return timings


def merge_rounds(rounds: Sequence[Sequence[Timing]]) -> list[tuple[str, int, int, list[float]]]:
    """Rounds of single passes → one entry per workload and batch size with the seconds of every round."""
    merged: dict[tuple[str, int, int], list[float]] = {}
    for timings in rounds:
        for workload, batch, texts, seconds in timings:
            merged.setdefault((workload, batch, texts), []).append(seconds)
    return [(workload, batch, texts, seconds) for (workload, batch, texts), seconds in merged.items()]


def _timed(engine: Engine, texts: Sequence[str], batch: int) -> float:
    start = time.perf_counter()
    if batch == DEFAULTS:
        engine.encode_default(texts)
    else:
        engine.encode(texts, batch)
    return time.perf_counter() - start


def _latency(engine: Engine, texts: Sequence[str]) -> dict[str, float]:
    times = []
    for text in texts:
        start = time.perf_counter()
        engine.encode([text], 1)
        times.append((time.perf_counter() - start) * 1000)
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}
