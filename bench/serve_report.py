"""The load test's results as Markdown, JSON beside it."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict
from pathlib import Path

from .load_results import Level, LoadResults, ServerResult
from .results_io import write_results


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
        f"Each request: one corpus text (or 1 … 64 in the mixed level), `/v1/embeddings` with base64 vectors. "
        f"Each level: up to {settings.requests} requests or {settings.seconds:.0f} s after a warm-up of 2 requests "
        "a client. CPU: the server process's user + system time over the level, per 1,000 texts embedded.  ",
        f"bertx in-process (`Model.encode` at its defaults, fresh process): {ip['texts_per_s']:.1f} texts/s "
        "over the whole list at once; in consecutive groups of N texts (N = clients: the most a server can "
        "batch when N clients each send one text and wait) "
        + ", ".join(f"N={n}: {v:.1f}" for n, v in ip["rounds_texts_per_s"].items())
        + f" texts/s; batch-1 p50 {ip['batch1_p50_ms']:.2f} ms, p99 {ip['batch1_p99_ms']:.2f} ms; CPU s per "
        f"1,000 texts: whole list {_num(ip.get('cpu_s_per_1000_texts'), 2)}, groups of N "
        + ", ".join(f"N={n}: {v:.2f}" for n, v in ip.get("rounds_cpu_s_per_1000_texts", {}).items())
        + ".",
        "",
        *_targets(results),
        "",
        "| server | clients | texts a request | texts/s | × in-process, whole list | × in-process, groups of N | "
        "CPU s / 1k texts | × in-process CPU, groups of N | p50 ms | p95 ms | p99 ms | errors | RSS MB | "
        "max abs diff | min cos |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server in results.servers:
        if server.skipped:
            lines.append(f"| {server.name} | skipped: {server.skipped} |||||||||||||| ")
            continue
        for level in server.levels:
            group_cpu = ip.get("rounds_cpu_s_per_1000_texts", {}).get(str(level.clients))
            lines.append(
                f"| {server.name} | {level.clients} | {level.texts_per_request} | {level.texts_per_s:.1f} | "
                f"{level.texts_per_s / ip['texts_per_s']:.2f}× | "
                f"{_ratio(level.texts_per_s, ip['rounds_texts_per_s'].get(str(level.clients)))} | "
                f"{_num(level.cpu_s_per_1000_texts, 2)} | {_ratio(level.cpu_s_per_1000_texts, group_cpu)} | "
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
    return write_results(out_dir, stem, asdict(results) | {"command": command}, markdown(results, command))


def _targets(results: LoadResults) -> list[str]:
    """The serving-cost targets as measured: the server's CPU per text at 32 clients over in-process groups of
    32, p99 at one client over in-process batch-1 p99, and throughput at 32 clients over infinity-emb's."""
    ip = results.in_process
    bertx = next((s for s in results.servers if s.name == "bertx serve" and not s.skipped), None)
    if bertx is None:
        return ["Targets: bertx serve did not run."]
    lines = ["Serving cost (targets in brackets):", ""]
    at32 = _level(bertx, 32, "1")
    group_cpu = ip.get("rounds_cpu_s_per_1000_texts", {}).get("32")
    if at32 is not None and at32.cpu_s_per_1000_texts is not None and group_cpu:
        lines.append(
            f"- CPU per text at 32 clients: {at32.cpu_s_per_1000_texts:.2f} s per 1,000 texts, "
            f"{at32.cpu_s_per_1000_texts / group_cpu:.2f}× in-process groups of 32 ({group_cpu:.2f}) [≤ 1.10×]"
        )
        matched = _cpu_at(ip.get("rounds_cpu_s_per_1000_texts", {}), at32.mean_round_texts)
        if matched is not None and at32.mean_round_texts is not None:
            lines.append(
                f"- the server's rounds held {at32.mean_round_texts:.1f} texts on average at 32 clients (each "
                "client waits for its answer, so while a round runs the others queue for the next): "
                f"{at32.cpu_s_per_1000_texts / matched:.2f}× in-process groups of that size ({matched:.2f})"
            )
    one = _level(bertx, 1, "1")
    if one is not None:
        extra = one.p99_ms - ip["batch1_p99_ms"]
        lines.append(
            f"- p99 at 1 client: {one.p99_ms:.2f} ms, in-process batch-1 p99 {ip['batch1_p99_ms']:.2f} ms: "
            f"{extra:+.2f} ms [≤ +2 ms]"
        )
    peer = next((s for s in results.servers if s.name.startswith("infinity") and not s.skipped), None)
    theirs = _level(peer, 32, "1") if peer is not None else None
    if at32 is not None and theirs is not None and theirs.texts_per_s:
        lines.append(
            f"- throughput at 32 clients: {at32.texts_per_s:.1f} texts/s, {at32.texts_per_s / theirs.texts_per_s:.2f}× "
            f"{peer.name} ({theirs.texts_per_s:.1f}) [≥ 1.5×]"  # type: ignore[union-attr]
        )
    errors = sum(level.errors for level in bertx.levels)
    lines.append(f"- errors over every level: {errors} [0]")
    return lines


def _cpu_at(by_size: dict[str, float], size: float | None) -> float | None:
    """In-process CPU per 1,000 texts for groups of `size` texts, interpolated on log2 of the size between the
    measured group sizes."""
    points = sorted((int(n), v) for n, v in by_size.items())
    if size is None or len(points) < 2 or not points[0][0] <= size <= points[-1][0]:
        return None
    for (a, va), (b, vb) in itertools.pairwise(points):
        if a <= size <= b:
            t = 0.0 if a == b else (math.log2(size) - math.log2(a)) / (math.log2(b) - math.log2(a))
            return va + t * (vb - va)
    return None


def _level(server: ServerResult, clients: int, texts_per_request: str) -> Level | None:
    return next(
        (lv for lv in server.levels if lv.clients == clients and lv.texts_per_request == texts_per_request), None
    )


def _ratio(value: float | None, base: float | None) -> str:
    return "–" if not base or value is None else f"{value / base:.2f}×"


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _sci(value: float | None) -> str:
    return "–" if value is None else f"{value:.1e}"
