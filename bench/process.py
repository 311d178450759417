"""Measurements in fresh processes: each engine's throughput and accuracy runs (interleaved across
engines), cold start (new process → first embedding) and peak RSS."""

from __future__ import annotations

import contextlib
import json
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .engine_types import Skipped

if TYPE_CHECKING:
    from .measuring import Measured, Settings, Timing

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


def measure_interleaved(
    names: Sequence[str],
    artifact: Path,
    settings: Settings,
    workloads: dict[str, list[str]],
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Measured | Skipped]:
    """Each engine in a new process of its own; the timed rounds taken in turn.

    Engines are loaded one at a time, and each is warmed up, gives its corpus vectors and times its
    batch-1 latency while the others wait idle. Then round r of every engine runs, one engine at a
    time, starting with a different engine each round. An engine that cannot load, or dies, is
    reported as skipped with its last words.
    """
    from .measuring import Measured, merge_rounds

    results: dict[str, Measured | Skipped] = {}
    with tempfile.TemporaryDirectory(prefix="bertx-bench-") as folder:
        spec = Path(folder) / "spec.json"
        spec.write_text(json.dumps({"settings": asdict(settings), "workloads": workloads}), encoding="utf-8")
        workers: dict[str, _Worker] = {}
        try:
            for name in names:
                progress(f"{name}: loading in its own process")
                worker = _Worker(name, artifact, settings.threads, spec, Path(folder) / name)
                if worker.ready is None:
                    results[name] = Skipped(name, worker.close())
                else:
                    workers[name] = worker
            for repeat in range(settings.repeats):
                turn = list(workers)
                for name in turn[repeat % len(turn) :] + turn[: repeat % len(turn)] if turn else []:
                    progress(f"round {repeat + 1} of {settings.repeats}: {name}")
                    if not workers[name].round():
                        results[name] = Skipped(name, workers.pop(name).close())
            for name, worker in workers.items():
                ready = worker.ready or {}
                results[name] = Measured(
                    int(ready["size_bytes"]),
                    np.load(worker.vectors),
                    merge_rounds(worker.rounds),
                    ready["latency_ms"],
                    ready["details"],
                )
        finally:
            for worker in workers.values():
                worker.close()
    return {name: results[name] for name in names}


class _Worker:
    """One engine's `rounds` worker: JSON lines on its stdout answer the commands sent to its stdin."""

    LOAD_TIMEOUT = 3600.0  # building a peer (NNCF calibration, an ONNX export) takes minutes
    ROUND_TIMEOUT = 3600.0

    def __init__(self, engine: str, artifact: Path, threads: int, spec: Path, out: Path) -> None:
        self.name = engine
        self.vectors = out.with_suffix(".npy")
        self.rounds: list[list[Timing]] = []
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")
        paths = (str(spec), str(self.vectors))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bertx.bench.worker", engine, str(artifact), str(threads), "rounds", *paths],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.ready = self._receive(self.LOAD_TIMEOUT)

    def round(self) -> bool:
        """Run one timed round; False when the worker died or went silent."""
        reply = self._send("round", self.ROUND_TIMEOUT)
        if reply is None:
            return False
        self.rounds.append([(w, int(b), int(n), float(t)) for w, b, n, t in reply["timings"]])
        return True

    def close(self) -> str:
        """Stop the worker; returns the reason it gave for stopping early, if any."""
        if self._process.poll() is None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()  # type: ignore[union-attr]
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()
        self._stderr.close()
        reason = lines[-1] if lines else f"exit code {self._process.returncode}"
        return reason.removeprefix(f"{self.name} skipped: ")

    def _send(self, command: str, timeout: float) -> dict[str, Any] | None:
        try:
            self._process.stdin.write(command + "\n")  # type: ignore[union-attr]
            self._process.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            return None
        return self._receive(timeout)

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        stdout = self._process.stdout
        assert stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self._process.kill()
                return None
        line = stdout.readline()
        return json.loads(line) if line.strip() else None
