"""Load test of `bertx serve` against bertx in-process and infinity-emb, on 127.0.0.1 only.

Each server runs in its own process on the same machine, is sent the real corpus by 1, 8, 32 and 64
concurrent clients (one text a request, OpenAI's `/v1/embeddings` with base64 vectors, as OpenAI's own
client asks for them), then by 32 clients sending 1 … 64 texts a request, and is measured for throughput,
latency percentiles, errors, resident memory and its CPU time per text (the load generator shares the
cores, so CPU, not wall time, is what compares a server with in-process work fairly).
Every level is bounded in requests and in seconds. bertx in-process (`Model.encode` in a fresh process,
same variant and threads) gives the ceiling the server is held to and the vectors every response is
compared with. An optional soak keeps 32 clients going for minutes and samples the server's memory.

infinity-emb pins numpy < 2 and older web libraries, so it lives in a virtual environment of its own
(`make bench-serve` builds it); where that is missing it is reported as skipped, with why.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .harness import corpus_texts
from .load_clients import levels, percentile, soak_test
from .load_results import LoadResults, LoadSettings, ServerResult, rss_mb, server_url
from .report import machine, versions

INFINITY_VENV = Path("models") / ".bench-peers" / "infinity-venv"
INFINITY_VERSION = "0.0.78"
READY_TIMEOUT_S = 300.0


def run(artifact: Path, settings: LoadSettings, progress: Callable[[str], None] = lambda _: None) -> LoadResults:
    """In-process ceiling first, then each server, one at a time, each level in turn."""
    texts = [t.replace("\n", " ") for t in corpus_texts()[: settings.texts]]
    with tempfile.TemporaryDirectory(prefix="bertx-load-") as folder:
        progress("bertx in-process …")
        in_process, reference = _in_process(artifact, settings, texts, Path(folder))
        servers = []
        soak = None
        progress("bertx serve …")
        bertx_server = _bertx_command(artifact, settings)
        result, process = _start(ServerResult("bertx serve", bertx_server), "/ready", Path(folder) / "bertx.log")
        if process is not None:
            try:
                levels(result, process, "/v1/embeddings", texts, reference, settings, progress)
                if settings.soak_seconds > 0:
                    progress(f"soak, {settings.soak_clients} clients for {settings.soak_seconds:.0f} s …")
                    soak = soak_test(process, server_url(result) + "/v1/embeddings", texts, settings)
            finally:
                _stop(process)
        servers.append(result)
        if settings.infinity:
            progress("infinity-emb …")
            servers.append(_infinity(artifact, settings, texts, reference, Path(folder), progress))
    return LoadResults(settings, str(artifact), in_process, servers, soak, machine(), versions())


# --- the in-process ceiling -------------------------------------------------------------------------


def _in_process(
    artifact: Path, settings: LoadSettings, texts: Sequence[str], folder: Path
) -> tuple[dict[str, Any], np.ndarray]:
    """bertx in a fresh bench worker process (`baseline`), the variant served, at its defaults."""
    from .process import run_worker

    texts_file, vectors_file = folder / "texts.txt", folder / "vectors.npy"
    texts_file.write_text("\n".join(texts), encoding="utf-8")
    # the concurrency levels, and powers of two up to the largest: a server's rounds hold fewer texts than its
    # clients when they wait on one another, and the report compares it with groups of its own round size
    largest = max((*settings.clients, settings.mixed_clients))
    sizes = set(settings.clients) | {settings.mixed_clients} | {2**k for k in range(8) if 2**k <= largest}
    groups = ",".join(str(c) for c in sorted(sizes - {0}))
    engine = f"bertx-{settings.variant}"
    arguments = [engine, str(artifact), str(settings.threads), "baseline", str(texts_file), str(vectors_file), groups]
    result = run_worker(arguments, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"bertx in-process failed: {_tail(result.stderr)}")
    return json.loads(result.stdout.strip().splitlines()[-1]), np.load(vectors_file)


def baseline(
    encode: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], groups: Sequence[int]
) -> dict[str, Any]:
    """What the server is held to, timed with `encode` (an engine's defaults): texts/s and CPU seconds per
    1,000 texts over the whole list at once (median of 3), over consecutive groups as large as each
    concurrency level (the most a server can batch when each of N clients sends one text and waits; best of
    2), and batch-1 latency."""
    runs, cpu = [], []
    for _ in range(3):
        start, cpu_start = time.perf_counter(), time.process_time()
        encode(texts)
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    for text in texts[:300]:  # each new length is a new shape: OpenVINO prepares kernels once per shape
        encode([text])
    single = []
    for text in texts[:300]:
        start = time.perf_counter()
        encode([text])
        single.append(time.perf_counter() - start)
    rounds, rounds_cpu = {}, {}
    for size in groups:
        passes, cpu_passes = [], []
        for _ in range(2):
            start, cpu_start = time.perf_counter(), time.process_time()
            for first in range(0, len(texts), size):
                encode(texts[first : first + size])
            passes.append(time.perf_counter() - start)
            cpu_passes.append(time.process_time() - cpu_start)
        rounds[str(size)] = len(texts) / min(passes)
        rounds_cpu[str(size)] = 1000 * min(cpu_passes) / len(texts)
    return {
        "texts_per_s": len(texts) / float(np.median(runs)),
        "cpu_s_per_1000_texts": 1000 * float(np.median(cpu)) / len(texts),
        "rounds_texts_per_s": rounds,
        "rounds_cpu_s_per_1000_texts": rounds_cpu,
        "batch1_p50_ms": percentile(single, 50),
        "batch1_p99_ms": percentile(single, 99),
    }


# --- servers ------------------------------------------------------------------------------------------


def _bertx_command(artifact: Path, settings: LoadSettings) -> list[str]:
    return [
        *(sys.executable, "-m", "bertx.cli", "serve", str(artifact)),
        *("--variant", settings.variant, "--threads", str(settings.threads)),
        *("--host", "127.0.0.1", "--port", str(_free_port()), "--log-level", "warning"),
    ]


def infinity_executable() -> Path:
    return INFINITY_VENV / "bin" / "infinity_emb"


def _infinity(
    artifact: Path,
    settings: LoadSettings,
    texts: Sequence[str],
    reference: np.ndarray,
    folder: Path,
    progress: Callable[[str], None],
) -> ServerResult:
    """infinity-emb serving the same model with its ONNX (optimum) engine, the one its documentation
    recommends for CPUs, from a plain `last_hidden_state` export of the artifact's source weights (which
    infinity optimizes itself when it loads it)."""
    from bertx.manifest import Manifest, Pooling

    from .peers import PEERS_DIR, _plain_export, limit_length

    name = f"infinity-emb {INFINITY_VERSION}"
    executable = infinity_executable()
    if not executable.is_file():
        return ServerResult(name, skipped=f"not installed at {INFINITY_VENV} (make bench-serve installs it)")
    manifest = Manifest.load(artifact)
    source = Path(manifest.source.path)
    if not source.is_dir():
        return ServerResult(name, skipped=f"source weights not found at {source}")
    if manifest.defaults.pooling not in (Pooling.MEAN, Pooling.CLS):
        return ServerResult(name, skipped=f"it pools mean or cls, not {manifest.defaults.pooling}")
    model = PEERS_DIR / artifact.name / "infinity"
    if not (model / "model.onnx").is_file():
        progress("infinity-emb: exporting the plain ONNX it reads …")
        _plain_export(source, model)
    limit_length(model, manifest.defaults.max_seq_length)
    command = [
        *(str(executable.resolve()), "v2", "--model-id", ".", "--served-model-name", "model"),
        *("--engine", "optimum", "--device", "cpu", "--batch-size", "32", "--no-model-warmup"),
        # its optimum engine pools the first token unless told "mean" ("auto" falls to cls there)
        *("--pooling-method", "mean" if manifest.defaults.pooling is Pooling.MEAN else "cls"),
        *("--host", "127.0.0.1", "--port", str(_free_port())),
        *("--log-level", "warning"),
    ]
    env = {"OMP_NUM_THREADS": str(settings.threads), "INFINITY_ANONYMOUS_USAGE_STATS": "0", "HF_HUB_OFFLINE": "1"}
    # infinity 0.0.78 finds a local folder's ONNX file only by a path relative to the folder it runs in
    result, process = _start(ServerResult(name, command), "/health", folder / "infinity.log", env, cwd=model)
    if process is None:
        return result
    try:
        levels(result, process, "/embeddings", texts, reference, settings, progress)
    finally:
        _stop(process)
    return result


def _start(
    result: ServerResult, ready: str, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[ServerResult, subprocess.Popen[bytes] | None]:
    """Start the server and wait until `ready` answers 200; on failure the result says why."""
    import httpx

    start = time.perf_counter()
    with log.open("wb") as handle:
        try:
            process = subprocess.Popen(
                result.command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
            )
        except OSError as exc:
            result.skipped = f"cannot start {result.command[0]}: {exc}"
            return result, None
    url = server_url(result) + ready
    while time.perf_counter() - start < READY_TIMEOUT_S:
        if process.poll() is not None:
            result.skipped = f"exited with {process.returncode}: {_tail(log.read_text(errors='replace'))}"
            return result, None
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                result.startup_s = time.perf_counter() - start
                result.idle_rss_mb = rss_mb(process.pid)
                return result, process
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    _stop(process)
    result.skipped = f"not ready after {READY_TIMEOUT_S:.0f} s: {_tail(log.read_text(errors='replace'))}"
    return result, None


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output"
