"""The measurements behind `bertx bench`: throughput, latency, cold start, peak RSS and accuracy.

Every engine runs the same workloads in the same run, so ratios to PyTorch fp32 (and to
sentence-transformers) compare like with like. Each engine lives in a process of its own, and the
engines take their timed rounds in turn (round 1 of every engine, then round 2, ...), so a machine
whose speed drifts over minutes slows every engine alike instead of the ones that happened to run
late. The median of the rounds is reported with the spread (min-max).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bertx.manifest import Manifest
from bertx.model import TruncationWarning
from bertx.pooling import cosine_rows
from bertx.tokenization import TextEncoder

from .engine_types import PYTORCH, ST_TORCH, Skipped
from .engines import engine_names, load_engine
from .measuring import Settings, measure
from .process import cold_start, measure_interleaved, peak_rss


def corpus_texts() -> list[str]:
    """The built-in real-text corpus: over 1,000 texts of mixed lengths and languages."""
    data = resources.files("bertx.bench").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    return [line for line in data.splitlines() if line.strip()]


def fixed_length_texts(encoder: TextEncoder, tokens: int, count: int) -> list[str]:
    """`count` distinct real texts cut or repeated to exactly `tokens` tokens (special tokens included)."""
    pool_texts = corpus_texts()
    out = []
    for i in range(count):
        words: list[str] = []
        j = i
        while len(encoder.encode([" ".join(words)])[0].ids) < tokens + 8 and j < i + len(pool_texts):
            words += pool_texts[j % len(pool_texts)].split()
            j += 1
        while words and len(encoder.encode([" ".join(words)])[0].ids) > tokens:
            words.pop()
        out.append(" ".join(words))
    return out


@dataclass
class Row:
    """One engine on one workload at one batch size."""

    engine: str
    workload: str
    batch_size: int
    texts: int
    tokens: int
    seconds: list[float]
    texts_per_s: float = 0.0
    tokens_per_s: float = 0.0
    spread: tuple[float, float] = (0.0, 0.0)
    ratio_to_pytorch: float | None = None
    ratio_to_st: float | None = None


@dataclass
class EngineFacts:
    """Per-engine figures that do not depend on the workload."""

    engine: str
    size_bytes: int
    cosine_min: float | None = None
    cosine_mean: float | None = None
    recall_at_10: float | None = None  # of PyTorch fp32's 10 nearest neighbours of each corpus text
    latency_ms: dict[str, float] = field(default_factory=dict)
    cold_start_s: float | None = None
    peak_rss_mb: float | None = None  # embedding the corpus with the engine's defaults
    peak_rss_batch32_mb: float | None = None  # the same, 32 texts a batch
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class Results:
    """Everything one `bertx bench` run measured."""

    artifact: str
    random_weights: bool
    settings: Settings
    rows: list[Row]
    engines: list[EngineFacts]
    skipped: list[Skipped]


def neighbour_recall(vectors: np.ndarray, reference: np.ndarray, k: int) -> float:
    """Recall@k of `reference`'s nearest neighbours (cosine, each text's own row left out) among those of
    `vectors`: what a search user of these vectors feels."""

    def nearest(matrix: np.ndarray) -> np.ndarray:
        unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1, kind="stable")[:, :k]

    found, truth = nearest(vectors.astype(np.float64)), nearest(reference.astype(np.float64))
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))


def run(artifact: Path, settings: Settings, progress: Callable[[str], None] = lambda message: None) -> Results:
    """Benchmark every engine on the artifact (see module doc).

    The corpus has texts over the max length on purpose; every engine truncates them the same way, so
    bertx's truncation warning is silenced here instead of repeated for every measurement.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return _run(artifact, settings, progress)


def _run(artifact: Path, settings: Settings, progress: Callable[[str], None]) -> Results:
    manifest = Manifest.load(artifact)
    encoder = TextEncoder(
        artifact / manifest.tokenizer.file, manifest.defaults.max_seq_length, manifest.tokenizer.pad_token_id
    )
    corpus = corpus_texts()[: settings.corpus_limit]
    workloads = {"corpus": corpus}
    for length in settings.fixed_lengths:
        if length <= manifest.defaults.max_seq_length:
            workloads[f"fixed-{length}"] = fixed_length_texts(encoder, length, settings.fixed_count)
    token_counts = {name: sum(len(e.ids) for e in encoder.encode(texts)) for name, texts in workloads.items()}
    names = list(settings.engines or engine_names(manifest))
    if PYTORCH not in names:
        names.insert(0, PYTORCH)
    rows: list[Row] = []
    facts: list[EngineFacts] = []
    skipped: list[Skipped] = []
    reference: np.ndarray | None = None
    interleaved = measure_interleaved(names, artifact, settings, workloads, progress) if settings.isolated else {}
    for name in names:
        if settings.isolated:
            measured = interleaved[name]
        else:
            progress(f"{name}: loading")
            engine = load_engine(name, artifact, settings.threads)
            measured = engine if isinstance(engine, Skipped) else measure(engine, workloads, settings, progress)
            del engine
        if isinstance(measured, Skipped):
            skipped.append(measured)
            continue
        fact = EngineFacts(name, measured.size_bytes, latency_ms=measured.latency_ms, details=measured.details)
        if name == PYTORCH:
            reference = measured.vectors
        if reference is not None:
            cosines = cosine_rows(measured.vectors, reference)
            fact.cosine_min, fact.cosine_mean = float(cosines.min()), float(cosines.mean())
            fact.recall_at_10 = neighbour_recall(measured.vectors, reference, 10)
        for workload, batch, texts, seconds in measured.timings:
            tokens = token_counts[workload] * texts // max(len(workloads[workload]), 1)
            rows.append(Row(name, workload, batch, texts, tokens, seconds))
        if settings.process_checks:
            progress(f"{name}: cold start and peak RSS")
            fact.cold_start_s = cold_start(name, artifact, settings.threads)
            fact.peak_rss_mb = peak_rss(name, artifact, settings.threads, corpus, None)
            fact.peak_rss_batch32_mb = peak_rss(name, artifact, settings.threads, corpus, 32)
        facts.append(fact)
    _derive(rows)
    return Results(str(artifact), _random_weights(manifest), settings, rows, facts, skipped)


def _derive(rows: list[Row]) -> None:
    """Fill throughput, spread and ratios from the measured seconds."""
    for row in rows:
        median = statistics.median(row.seconds)
        row.texts_per_s = row.texts / median
        row.tokens_per_s = row.tokens / median
        row.spread = (row.texts / max(row.seconds), row.texts / min(row.seconds))
    by_key = {(r.engine, r.workload, r.batch_size): r for r in rows}
    for row in rows:
        for peer, attribute in ((PYTORCH, "ratio_to_pytorch"), (ST_TORCH, "ratio_to_st")):
            base = by_key.get((peer, row.workload, row.batch_size))
            if base is not None:
                setattr(row, attribute, row.texts_per_s / base.texts_per_s)


def _random_weights(manifest: Manifest) -> bool:
    return bool(manifest.export.get("random_weights")) or "random" in manifest.source.id


def as_dict(results: Results) -> dict[str, Any]:
    """JSON-ready form of the results."""
    from dataclasses import asdict

    return asdict(results)
