"""What a load test is told and what it finds: settings, per-level and per-server results, the soak; and the
resident memory and CPU time of a server process and its children."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    mixed_clients: int = 32  # a level of requests of 1 … MIXED_MAX texts each, at this concurrency (0: none)


MIXED_MAX = 64  # texts in the largest request of the mixed level


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
    texts: int = 0  # embedded in the answered requests
    cpu_s: float | None = None  # the server's CPU time (all its threads and children) over the level
    texts_per_request: str = "1"  # or "1-64": the mixed level
    mean_round_texts: float | None = None  # bertx serve: texts per batching round over the level (its /metrics)

    @property
    def cpu_s_per_1000_texts(self) -> float | None:
        return None if self.cpu_s is None or not self.texts else 1000 * self.cpu_s / self.texts


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


def server_url(result: ServerResult) -> str:
    return f"http://127.0.0.1:{result.command[result.command.index('--port') + 1]}"


def rss_mb(pid: int) -> float | None:
    """Resident memory of the process and its children, in MB (Linux /proc), or None elsewhere."""
    total = 0
    for proc in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{proc}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024 if total else None


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) the process and its children have used so far, in seconds (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, found = 0, False
    for proc in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        found = True
    return total / ticks if found else None


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in children(c)]
