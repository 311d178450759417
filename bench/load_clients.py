"""The load test's clients: raw HTTP/1.1 connections sending real text at a fixed concurrency (one text a
request, or a mix of 1 … 64), tallying latency, errors, texts and the vectors that came back, with the
server's CPU time over each level; and a soak at steady load."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bertx.pooling import cosine_rows

from .load_results import MIXED_MAX, Level, LoadSettings, ServerResult, Soak, cpu_seconds, rss_mb, server_url


@dataclass(repr=False)  # asyncio formats a task's result when it finishes: 1,000 vectors took seconds
class _Tally:
    latencies: list[float] = field(default_factory=list)
    texts: int = 0
    errors: int = 0
    first_error: str | None = None
    vectors: dict[int, np.ndarray] = field(default_factory=dict)


def levels(
    result: ServerResult,
    process: subprocess.Popen[bytes],
    route: str,
    texts: Sequence[str],
    reference: np.ndarray,
    settings: LoadSettings,
    progress: Callable[[str], None],
) -> None:
    url = server_url(result) + route
    runs = [(clients, requests_of(len(texts), 1)) for clients in settings.clients]
    if settings.mixed_clients:
        runs.append((settings.mixed_clients, requests_of(len(texts), MIXED_MAX)))
    for clients, requests in runs:
        mixed = max(len(rows) for rows in requests) > 1
        progress(f"{result.name}: {clients} clients{', 1-64 texts a request' if mixed else ''} …")
        asyncio.run(_load(url, texts, clients, 2 * clients, settings.seconds, requests, keep=False))  # warm-up
        rounds_before = _rounds(server_url(result))
        cpu_before, started = cpu_seconds(process.pid), time.perf_counter()
        tally = asyncio.run(_load(url, texts, clients, settings.requests, settings.seconds, requests, keep=True))
        elapsed, cpu_after = time.perf_counter() - started, cpu_seconds(process.pid)
        rounds_after = _rounds(server_url(result))
        level = _level(clients, tally, elapsed, reference, rss_mb(process.pid))
        if cpu_before is not None and cpu_after is not None:
            level.cpu_s = cpu_after - cpu_before
        if rounds_before is not None and rounds_after is not None and rounds_after[1] > rounds_before[1]:
            level.mean_round_texts = (rounds_after[0] - rounds_before[0]) / (rounds_after[1] - rounds_before[1])
        level.texts_per_request = f"1-{MIXED_MAX}" if mixed else "1"
        result.levels.append(level)


def _rounds(base: str) -> tuple[float, float] | None:
    """(texts, rounds) so far, from bertx serve's /metrics; None for a server without them."""
    import httpx

    try:
        text = httpx.get(f"{base}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    found = {"bertx_batch_texts_sum": 0.0, "bertx_batch_texts_count": 0.0}
    for line in text.splitlines():
        name = line.partition(" ")[0].split("{")[0]
        if name in found:
            found[name] += float(line.split()[-1])
    texts, rounds = found["bertx_batch_texts_sum"], found["bertx_batch_texts_count"]
    return (texts, rounds) if rounds else None


def requests_of(count: int, largest: int) -> list[list[int]]:
    """Rows of the texts each request carries, in turn over the whole list: one each, or 1 … `largest` drawn
    from a fixed seed, so every server is sent the same requests."""
    if largest == 1:
        return [[row] for row in range(count)]
    sizes = np.random.default_rng(0).integers(1, largest + 1, size=count)
    requests, first = [], 0
    for size in sizes:
        requests.append([(first + k) % count for k in range(int(size))])
        first = (first + int(size)) % count
    return requests


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
        texts_per_s=tally.texts / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(tally.latencies, 50),
        p95_ms=percentile(tally.latencies, 95),
        p99_ms=percentile(tally.latencies, 99),
        rss_mb=rss,
        max_abs_diff=diff,
        min_cosine=cosine,
        first_error=tally.first_error,
        texts=tally.texts,
    )


async def _load(
    url: str,
    texts: Sequence[str],
    clients: int,
    requests: int,
    seconds: float,
    rows_of: Sequence[Sequence[int]],
    keep: bool,
) -> _Tally:
    """`clients` concurrent clients, each on its own keep-alive connection sending a request (the texts of the
    next entry of `rows_of`, in turn) and waiting for its answer, until `requests` were sent or `seconds`
    passed."""
    tally = _Tally()
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    host, port, path = _splitserver_url(url)
    bodies = [
        json.dumps({"input": [texts[r] for r in rows], "model": "model", "encoding_format": "base64"}).encode()
        for rows in rows_of
    ]

    async def one_client() -> None:
        connection: _Connection | None = None
        try:
            while (i := next(counter)) < requests and time.perf_counter() < deadline:
                which = i % len(bodies)
                start = time.perf_counter()
                try:
                    connection = connection or await _Connection.open(host, port)
                    status, payload = await asyncio.wait_for(connection.post(path, bodies[which]), 60)
                    elapsed = time.perf_counter() - start
                    if status != 200:
                        _error(tally, f"HTTP {status}: {payload[:200].decode(errors='replace')}")
                        continue
                    data = json.loads(payload)["data"]
                    vectors = [np.frombuffer(base64.b64decode(d["embedding"]), np.float32) for d in data]
                    if len(vectors) != len(rows_of[which]):
                        raise ValueError(f"{len(vectors)} vectors for {len(rows_of[which])} texts")
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError, IndexError) as exc:
                    _error(tally, f"{type(exc).__name__}: {exc}")
                    if connection is not None:
                        connection.close()
                    connection = None
                    continue
                tally.latencies.append(elapsed)
                tally.texts += len(vectors)
                for row, vector in zip(rows_of[which], vectors):
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


def _splitserver_url(url: str) -> tuple[str, int, str]:
    """Host, port and path of an http:// URL."""
    rest = url.removeprefix("http://")
    address, _, path = rest.partition("/")
    host, _, port = address.partition(":")
    return host, int(port or 80), "/" + path


def _error(tally: _Tally, message: str) -> None:
    tally.errors += 1
    if tally.first_error is None:
        tally.first_error = message


def soak_test(process: subprocess.Popen[bytes], url: str, texts: Sequence[str], settings: LoadSettings) -> Soak:
    """`soak_clients` clients for `soak_seconds`, the server's resident memory sampled every 5 s."""
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()

    async def sampled() -> _Tally:
        async def sample() -> None:
            while True:
                rss = rss_mb(process.pid)
                if rss is not None:
                    samples.append((time.perf_counter() - start, rss))
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample())
        try:
            one_each = requests_of(len(texts), 1)
            return await _load(url, texts, settings.soak_clients, 10**9, settings.soak_seconds, one_each, keep=False)
        finally:
            sampler.cancel()

    tally = asyncio.run(sampled())
    elapsed = time.perf_counter() - start
    rss = rss_mb(process.pid)
    if rss is not None:
        samples.append((elapsed, rss))
    after_minute = next((mb for t, mb in samples if t >= 60), None)
    growth = samples[-1][1] / after_minute - 1 if after_minute and samples[-1][0] > 60 else None
    return Soak(
        clients=settings.soak_clients,
        seconds=elapsed,
        requests=len(tally.latencies) + tally.errors,
        errors=tally.errors,
        texts_per_s=tally.texts / elapsed,
        p99_ms=percentile(tally.latencies, 99),
        rss_mb=[(round(t, 1), round(mb, 1)) for t, mb in samples],
        growth_after_first_minute=growth,
        first_error=tally.first_error,
    )


# --- helpers ------------------------------------------------------------------------------------------


def percentile(latencies: Sequence[float], q: float) -> float:
    return float(np.percentile(latencies, q) * 1000) if latencies else float("nan")
