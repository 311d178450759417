"""Measurements in fresh processes: each engine's throughput and accuracy run, cold start (new process →
first embedding) and peak RSS."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .engines import Skipped

if TYPE_CHECKING:
    from .harness import Measured, Settings

RUNS = 3


def run_worker(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bertx.bench.worker", *args], capture_output=True, text=True, timeout=timeout
    )


def cold_start(engine: str, artifact: Path, threads: int) -> float | None:
    """Median wall time from starting a Python process to its first embedding (interpreter start included)."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = run_worker([engine, str(artifact), str(threads), "first"])
        if result.returncode != 0:
            return None
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss(engine: str, artifact: Path, threads: int, texts: Sequence[str], batch: int | None) -> float | None:
    """Peak resident memory (MB) of a process that only loads the engine and embeds `texts` at `batch`
    texts a batch, or with the engine's defaults for None."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as handle:
        handle.write("\n".join(t.replace("\n", " ") for t in texts))
    try:
        result = run_worker([engine, str(artifact), str(threads), "rss", handle.name, str(batch or "default")])
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if result.returncode != 0:
        return None
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def measure_isolated(
    engine: str, artifact: Path, settings: Settings, workloads: dict[str, list[str]]
) -> Measured | Skipped:
    """Load `engine` in a new process and run every workload there (`harness.measure`)."""
    from .harness import Measured

    with tempfile.TemporaryDirectory(prefix="bertx-bench-") as folder:
        spec, out = Path(folder) / "spec.json", Path(folder) / "out"
        spec.write_text(json.dumps({"settings": asdict(settings), "workloads": workloads}), encoding="utf-8")
        result = run_worker(
            [engine, str(artifact), str(settings.threads), "measure", str(spec), str(out)], timeout=3600
        )
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            reason = lines[-1] if lines else f"exit code {result.returncode}"
            return Skipped(engine, reason.removeprefix(f"{engine} skipped: "))
        data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        vectors = np.load(out.with_suffix(".npy"))
    timings = [(w, int(b), int(n), [float(x) for x in s]) for w, b, n, s in data["timings"]]
    return Measured(int(data["size_bytes"]), vectors, timings, data["latency_ms"], data["details"])
