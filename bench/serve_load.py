"""Load test of `bertx serve` against bertx in-process and infinity-emb, on 127.0.0.1 only.

Each server runs in its own process on the same machine, is sent the real corpus by 1, 8, 32 and 64
concurrent clients (one text a request, OpenAI's `/v1/embeddings` with base64 vectors, as OpenAI's own
client asks for them), and is measured for throughput, latency percentiles, errors and resident memory.
Every level is bounded in requests and in seconds. bertx in-process (`Model.encode` in a fresh process,
same variant and threads) gives the ceiling the server is held to and the vectors every response is
compared with. An optional soak keeps 32 clients going for minutes and samples the server's memory.

infinity-emb pins numpy < 2 and older web libraries, so it lives in a virtual environment of its own
(`make bench-serve` builds it); where that is missing it is reported as skipped, with why.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertx.pooling import cosine_rows

from .harness import corpus_texts
from .report import machine, versions

INFINITY_VENV = Path("models") / ".bench-peers" / "infinity-venv"
INFINITY_VERSION = "0.0.78"
READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LoadSettings:
    """What the load test runs: concurrency levels, bounds, the variant and the thread budget."""

    clients: tuple[int, ...] = (1, 8, 32, 64)
    requests: int = 2000  # per level, after the warm-up
    seconds: float = 60.0  # per level: the level stops early when this runs out
    texts: int | None = None  # the first N corpus texts [all]
    variant: str = "fp32"
    threads: int = 2
    soak_seconds: float = 0.0
    soak_clients: int = 32
    infinity: bool = True


@dataclass
class Level:
    """One concurrency level against one server."""

    clients: int
    requests: int
    errors: int
    seconds: float
    texts_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rss_mb: float | None
    max_abs_diff: float | None  # against the in-process vectors of the same texts
    min_cosine: float | None
    first_error: str | None = None


@dataclass
class ServerResult:
    """Every level of one server, or why it was skipped."""

    name: str
    command: list[str] = field(default_factory=list)
    levels: list[Level] = field(default_factory=list)
    startup_s: float | None = None
    idle_rss_mb: float | None = None
    skipped: str | None = None


@dataclass
class Soak:
    """A long run at one concurrency: errors and the server's memory over time."""

    clients: int
    seconds: float
    requests: int
    errors: int
    texts_per_s: float
    p99_ms: float
    rss_mb: list[tuple[float, float]]  # (seconds since start, MB)
    growth_after_first_minute: float | None  # last sample over the sample at 60 s, minus 1
    first_error: str | None = None


@dataclass
class LoadResults:
    settings: LoadSettings
    artifact: str
    in_process: dict[str, Any]
    servers: list[ServerResult]
    soak: Soak | None
    machine: dict[str, Any]
    versions: dict[str, str | None]


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
                _levels(result, process, "/v1/embeddings", texts, reference, settings, progress)
                if settings.soak_seconds > 0:
                    progress(f"soak, {settings.soak_clients} clients for {settings.soak_seconds:.0f} s …")
                    soak = _soak(process, _url(result) + "/v1/embeddings", texts, settings)
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
    groups = ",".join(str(c) for c in settings.clients)
    engine = f"bertx-{settings.variant}"
    arguments = [engine, str(artifact), str(settings.threads), "baseline", str(texts_file), str(vectors_file), groups]
    result = run_worker(arguments, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"bertx in-process failed: {_tail(result.stderr)}")
    return json.loads(result.stdout.strip().splitlines()[-1]), np.load(vectors_file)


def baseline(
    encode: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], groups: Sequence[int]
) -> dict[str, Any]:
    """What the server is held to, timed with `encode` (an engine's defaults): texts/s over the whole list
    at once (median of 3), over consecutive groups as large as each concurrency level (the most a server
    can batch when each of N clients sends one text and waits; best of 2), and batch-1 latency."""
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        encode(texts)
        runs.append(time.perf_counter() - start)
    for text in texts[:300]:  # each new length is a new shape: OpenVINO prepares kernels once per shape
        encode([text])
    single = []
    for text in texts[:300]:
        start = time.perf_counter()
        encode([text])
        single.append(time.perf_counter() - start)
    rounds = {}
    for size in groups:
        passes = []
        for _ in range(2):
            start = time.perf_counter()
            for first in range(0, len(texts), size):
                encode(texts[first : first + size])
            passes.append(time.perf_counter() - start)
        rounds[str(size)] = len(texts) / min(passes)
    return {
        "texts_per_s": len(texts) / float(np.median(runs)),
        "rounds_texts_per_s": rounds,
        "batch1_p50_ms": _percentile(single, 50),
        "batch1_p99_ms": _percentile(single, 99),
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
        _levels(result, process, "/embeddings", texts, reference, settings, progress)
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
    url = _url(result) + ready
    while time.perf_counter() - start < READY_TIMEOUT_S:
        if process.poll() is not None:
            result.skipped = f"exited with {process.returncode}: {_tail(log.read_text(errors='replace'))}"
            return result, None
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                result.startup_s = time.perf_counter() - start
                result.idle_rss_mb = _rss_mb(process.pid)
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


def _url(result: ServerResult) -> str:
    return f"http://127.0.0.1:{result.command[result.command.index('--port') + 1]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- load ---------------------------------------------------------------------------------------------


@dataclass(repr=False)  # asyncio formats a task's result when it finishes: 1,000 vectors took seconds
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    vectors: dict[int, np.ndarray] = field(default_factory=dict)


def _levels(
    result: ServerResult,
    process: subprocess.Popen[bytes],
    route: str,
    texts: Sequence[str],
    reference: np.ndarray,
    settings: LoadSettings,
    progress: Callable[[str], None],
) -> None:
    url = _url(result) + route
    for clients in settings.clients:
        progress(f"{result.name}: {clients} clients …")
        asyncio.run(_load(url, texts, clients, 2 * clients, settings.seconds, keep=False))  # warm-up
        started = time.perf_counter()
        tally = asyncio.run(_load(url, texts, clients, settings.requests, settings.seconds, keep=True))
        elapsed = time.perf_counter() - started
        result.levels.append(_level(clients, tally, elapsed, reference, _rss_mb(process.pid)))


def _level(clients: int, tally: _Tally, elapsed: float, reference: np.ndarray, rss: float | None) -> Level:
    done = len(tally.latencies)
    diff = cosine = None
    if tally.vectors:
        rows = sorted(tally.vectors)
        got = np.stack([tally.vectors[i] for i in rows])
        want = reference[rows]
        diff = float(np.abs(got - want).max())
        cosine = float(cosine_rows(got, want).min())
    return Level(
        clients=clients,
        requests=done + tally.errors,
        errors=tally.errors,
        seconds=elapsed,
        texts_per_s=done / elapsed if elapsed > 0 else 0.0,
        p50_ms=_percentile(tally.latencies, 50),
        p95_ms=_percentile(tally.latencies, 95),
        p99_ms=_percentile(tally.latencies, 99),
        rss_mb=rss,
        max_abs_diff=diff,
        min_cosine=cosine,
        first_error=tally.first_error,
    )


async def _load(url: str, texts: Sequence[str], clients: int, requests: int, seconds: float, keep: bool) -> _Tally:
    """`clients` concurrent clients, each on its own keep-alive connection sending one text a request and
    waiting for its answer, until `requests` were sent or `seconds` passed."""
    tally = _Tally()
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    host, port, path = _split_url(url)
    bodies = [json.dumps({"input": [t], "model": "model", "encoding_format": "base64"}).encode() for t in texts]

    async def one_client() -> None:
        connection: _Connection | None = None
        try:
            while (i := next(counter)) < requests and time.perf_counter() < deadline:
                row = i % len(texts)
                start = time.perf_counter()
                try:
                    connection = connection or await _Connection.open(host, port)
                    status, payload = await asyncio.wait_for(connection.post(path, bodies[row]), 60)
                    elapsed = time.perf_counter() - start
                    if status != 200:
                        _error(tally, f"HTTP {status}: {payload[:200].decode(errors='replace')}")
                        continue
                    encoded = json.loads(payload)["data"][0]["embedding"]
                    vector = np.frombuffer(base64.b64decode(encoded), np.float32)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError, IndexError) as exc:
                    _error(tally, f"{type(exc).__name__}: {exc}")
                    if connection is not None:
                        connection.close()
                    connection = None
                    continue
                tally.latencies.append(elapsed)
                if keep and row not in tally.vectors:
                    tally.vectors[row] = vector
        finally:
            if connection is not None:
                connection.close()

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return tally


class _Connection:
    """One HTTP/1.1 keep-alive connection. The load generator speaks HTTP over asyncio streams itself
    because it shares the machine's cores with the server it measures: a general client (httpx) spent
    about 4 ms of CPU a request here, a third of what bertx spends embedding a text."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode("ascii") + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return status, b"".join(parts)

    def close(self) -> None:
        self.writer.close()


def _split_url(url: str) -> tuple[str, int, str]:
    """Host, port and path of an http:// URL."""
    rest = url.removeprefix("http://")
    address, _, path = rest.partition("/")
    host, _, port = address.partition(":")
    return host, int(port or 80), "/" + path


def _error(tally: _Tally, message: str) -> None:
    tally.errors += 1
    if tally.first_error is None:
        tally.first_error = message


def _soak(process: subprocess.Popen[bytes], url: str, texts: Sequence[str], settings: LoadSettings) -> Soak:
    """`soak_clients` clients for `soak_seconds`, the server's resident memory sampled every 5 s."""
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()

    async def sampled() -> _Tally:
        async def sample() -> None:
            while True:
                rss = _rss_mb(process.pid)
                if rss is not None:
                    samples.append((time.perf_counter() - start, rss))
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample())
        try:
            return await _load(url, texts, settings.soak_clients, 10**9, settings.soak_seconds, keep=False)
        finally:
            sampler.cancel()

    tally = asyncio.run(sampled())
    elapsed = time.perf_counter() - start
    rss = _rss_mb(process.pid)
    if rss is not None:
        samples.append((elapsed, rss))
    after_minute = next((mb for t, mb in samples if t >= 60), None)
    growth = samples[-1][1] / after_minute - 1 if after_minute and samples[-1][0] > 60 else None
    return Soak(
        clients=settings.soak_clients,
        seconds=elapsed,
        requests=len(tally.latencies) + tally.errors,
        errors=tally.errors,
        texts_per_s=len(tally.latencies) / elapsed,
        p99_ms=_percentile(tally.latencies, 99),
        rss_mb=[(round(t, 1), round(mb, 1)) for t, mb in samples],
        growth_after_first_minute=growth,
        first_error=tally.first_error,
    )


# --- helpers ------------------------------------------------------------------------------------------


def _percentile(latencies: Sequence[float], q: float) -> float:
    return float(np.percentile(latencies, q) * 1000) if latencies else float("nan")


def _rss_mb(pid: int) -> float | None:
    """Resident memory of the process and its children, in MB (Linux /proc), or None elsewhere."""
    total = 0
    for proc in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{proc}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024 if total else None


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in _children(c)]


def _tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output"


# --- report -------------------------------------------------------------------------------------------


def markdown(results: LoadResults, command: str) -> str:
    """The results as markdown: one table of every server and level, then the soak."""
    m, settings = results.machine, results.settings
    ip = results.in_process
    lines = [
        f"# bertx serve under load: {Path(results.artifact).name} ({settings.variant})",
        "",
        f"Command: `{command}`  ",
        f"Machine: {m['cpu']} ({m['arch']}), {m['cores']} cores, AVX-512 {m['avx512']}, VNNI {m['vnni']}, "
        f"BF16 {m['bf16']}; {settings.threads} inference threads; clients in one process on the same machine.  ",
        f"Each request: one corpus text, `/v1/embeddings` with base64 vectors. Each level: up to "
        f"{settings.requests} requests or {settings.seconds:.0f} s after a warm-up of 2 requests a client.  ",
        f"bertx in-process (`Model.encode` at its defaults, fresh process): {ip['texts_per_s']:.1f} texts/s "
        "over the whole list at once; in consecutive groups of N texts (N = clients: the most a server can "
        "batch when N clients each send one text and wait) "
        + ", ".join(f"N={n}: {v:.1f}" for n, v in ip["rounds_texts_per_s"].items())
        + f" texts/s; batch-1 p50 {ip['batch1_p50_ms']:.2f} ms, p99 {ip['batch1_p99_ms']:.2f} ms.",
        "",
        "| server | clients | texts/s | × in-process, whole list | × in-process, groups of N | p50 ms | p95 ms | "
        "p99 ms | errors | RSS MB | max abs diff | min cos |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server in results.servers:
        if server.skipped:
            lines.append(f"| {server.name} | skipped: {server.skipped} ||||||||||| ")
            continue
        for level in server.levels:
            lines.append(
                f"| {server.name} | {level.clients} | {level.texts_per_s:.1f} | "
                f"{level.texts_per_s / ip['texts_per_s']:.2f}× | "
                f"{_ratio(level.texts_per_s, ip['rounds_texts_per_s'].get(str(level.clients)))} | "
                f"{level.p50_ms:.1f} | {level.p95_ms:.1f} | "
                f"{level.p99_ms:.1f} | {level.errors} | {_num(level.rss_mb, 0)} | "
                f"{_sci(level.max_abs_diff)} | {_num(level.min_cosine, 5)} |"
            )
    lines += ["", "| server | startup s | idle RSS MB |", "|---|---:|---:|"]
    for server in results.servers:
        if not server.skipped:
            lines.append(f"| {server.name} | {_num(server.startup_s, 1)} | {_num(server.idle_rss_mb, 0)} |")
    errors = [(s.name, lv.first_error) for s in results.servers for lv in s.levels if lv.first_error]
    if errors:
        lines += ["", "First errors:", *(f"- {name}: {message}" for name, message in errors)]
    soak = results.soak
    if soak is not None:
        growth = "n/a" if soak.growth_after_first_minute is None else f"{100 * soak.growth_after_first_minute:+.1f}%"
        samples = ", ".join(f"{t:.0f} s {mb:.0f}" for t, mb in soak.rss_mb[:: max(1, len(soak.rss_mb) // 12)])
        lines += [
            "",
            f"Soak: {soak.clients} clients for {soak.seconds:.0f} s: {soak.requests} requests, {soak.errors} errors, "
            f"{soak.texts_per_s:.1f} texts/s, p99 {soak.p99_ms:.1f} ms; server RSS after the first minute to the "
            f"end {growth} (MB at: {samples}).",
        ]
        if soak.first_error:
            lines.append(f"First soak error: {soak.first_error}")
    return "\n".join(lines) + "\n"


def write(results: LoadResults, out_dir: Path, stem: str, command: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = asdict(results) | {"command": command}
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    for path, text in zip(paths, (json.dumps(data, indent=1, default=float), markdown(results, command))):
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    return paths


def _ratio(value: float, base: float | None) -> str:
    return "–" if not base else f"{value / base:.2f}×"


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _sci(value: float | None) -> str:
    return "–" if value is None else f"{value:.1e}"
