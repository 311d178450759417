"""Measurements that need a fresh process: cold start (new process → first embedding) and peak RSS."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

RUNS = 3


def _worker(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bertx.bench.worker", *args], capture_output=True, text=True, timeout=timeout
    )


def cold_start(engine: str, artifact: Path, threads: int) -> float | None:
    """Median wall time from starting a Python process to its first embedding (interpreter start included)."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = _worker([engine, str(artifact), str(threads), "first"])
        if result.returncode != 0:
            return None
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss(engine: str, artifact: Path, threads: int, texts: Sequence[str]) -> float | None:
    """Peak resident memory (MB) of a process that only loads the engine and embeds `texts` at batch 32."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as handle:
        handle.write("\n".join(t.replace("\n", " ") for t in texts))
    try:
        result = _worker([engine, str(artifact), str(threads), "rss", handle.name])
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if result.returncode != 0:
        return None
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"])
