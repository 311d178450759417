"""Benchmark output: a rich table, JSON with the machine and versions, markdown, and a PNG chart."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.table import Table

from bertx.cpu import cpu_info

from .harness import Results, as_dict
from .measuring import DEFAULTS
from .results_io import write_results

_COLUMNS = (
    "engine",
    "batch",
    "texts/s (median)",
    "spread",
    "tokens/s",
    "× PyTorch fp32",
    "× sentence-transformers",
    "min cos",
    "mean cos",
    "recall@10",
)
_HEADER = "| " + " | ".join(_COLUMNS) + " |"
_PACKAGES = (
    "bertx",
    "onnxruntime",
    "tokenizers",
    "numpy",
    "torch",
    "transformers",
    "sentence-transformers",
    "optimum-onnx",
    "openvino",
    "nncf",
    "optimum-intel",
    "fastembed",
)


def machine() -> dict[str, Any]:
    """CPU model and flags, cores, OS and Python: what the numbers were measured on."""
    cpu = cpu_info()
    return {
        "cpu": cpu.model,
        "arch": cpu.machine,
        "avx2": cpu.avx2,
        "avx512": cpu.avx512,
        "vnni": cpu.vnni,
        "bf16": cpu.bf16,
        "amx": cpu.amx,
        "cpu_class": cpu.cpu_class,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    """Versions of the libraries that took part."""
    found: dict[str, str | None] = {}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def headline_table(results: Results, workload: str = "corpus") -> Table:
    """Throughput per engine and batch size on one workload, with ratios and accuracy."""
    weights = " — RANDOM WEIGHTS (accuracy only against the same random model)" if results.random_weights else ""
    table = Table(title=f"{Path(results.artifact).name}: {workload}, {results.settings.threads} threads{weights}")
    for column in ("engine", "batch", "texts/s", "spread", "tokens/s", "× pytorch", "× s-t", "min cos", "mean cos"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    facts = {f.engine: f for f in results.engines}
    for row in results.rows:
        if row.workload != workload:
            continue
        fact = facts[row.engine]
        table.add_row(
            row.engine,
            _batch(row.batch_size),
            f"{row.texts_per_s:,.1f}",
            f"{row.spread[0]:,.0f}–{row.spread[1]:,.0f}",
            f"{row.tokens_per_s:,.0f}",
            _ratio(row.ratio_to_pytorch),
            _ratio(row.ratio_to_st),
            _cos(fact.cosine_min),
            _cos(fact.cosine_mean),
            _recall(fact.recall_at_10),
        )
    return table


def engines_table(results: Results) -> Table:
    """Latency at batch 1, cold start, peak RSS and size per engine."""
    table = Table(title="Per engine")
    for column in ("engine", "p50 ms", "p95 ms", "p99 ms", "cold start s", "peak RSS MB", "at batch 32", "size MB"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for fact in results.engines:
        lat = fact.latency_ms
        table.add_row(
            fact.engine,
            f"{lat.get('p50', 0):.1f}",
            f"{lat.get('p95', 0):.1f}",
            f"{lat.get('p99', 0):.1f}",
            "-" if fact.cold_start_s is None else f"{fact.cold_start_s:.2f}",
            _mb(fact.peak_rss_mb),
            _mb(fact.peak_rss_batch32_mb),
            f"{fact.size_bytes / 1e6:.1f}",
        )
    for skipped in results.skipped:
        table.add_row(f"[yellow]{skipped.name}[/]", f"[yellow]skipped: {skipped.reason}[/]", "", "", "", "", "", "")
    return table


def markdown(results: Results, command: str) -> str:
    """The results as markdown tables, with the machine, versions and the command that made them."""
    info = machine()
    lines = [
        f"# bertx bench: {Path(results.artifact).name}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {info['cpu']} ({info['arch']}), {info['cores']} cores, CPU class {info['cpu_class']} (AVX2 "
        f"{info['avx2']}, AVX-512 {info['avx512']}, VNNI {info['vnni']}, BF16 {info['bf16']}, AMX {info['amx']}); "
        f"{results.settings.threads} threads for every engine.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items() if v) + ".",
    ]
    if results.random_weights:
        lines.append("\n**Random weights**: speed only; accuracy is measured against the same random model.")
    facts = {f.engine: f for f in results.engines}
    workloads = list(dict.fromkeys(r.workload for r in results.rows))
    for workload in workloads:
        lines += [
            "",
            f"## {workload}",
            "",
            _HEADER,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in (r for r in results.rows if r.workload == workload):
            fact = facts[row.engine]
            lines.append(
                f"| {row.engine} | {_batch(row.batch_size)} | {row.texts_per_s:,.1f} "
                f"| {row.spread[0]:,.0f}–{row.spread[1]:,.0f} "
                f"| {row.tokens_per_s:,.0f} | {_ratio(row.ratio_to_pytorch)} | {_ratio(row.ratio_to_st)} "
                f"| {_cos(fact.cosine_min)} | {_cos(fact.cosine_mean)} | {_recall(fact.recall_at_10)} |"
            )
    lines += [
        "",
        "## Per engine",
        "",
        "| engine | p50 ms (batch 1) | p95 ms | p99 ms | cold start s | peak RSS MB (defaults) "
        "| peak RSS MB (batch 32) | size MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fact in results.engines:
        lat = fact.latency_ms
        cold = "-" if fact.cold_start_s is None else f"{fact.cold_start_s:.2f}"
        lines.append(
            f"| {fact.engine} | {lat.get('p50', 0):.1f} | {lat.get('p95', 0):.1f} | {lat.get('p99', 0):.1f} "
            f"| {cold} | {_mb(fact.peak_rss_mb)} | {_mb(fact.peak_rss_batch32_mb)} | {fact.size_bytes / 1e6:.1f} |"
        )
    for skipped in results.skipped:
        lines.append(f"| {skipped.name} | skipped: {skipped.reason} | | | | | | |")
    return "\n".join(lines) + "\n"


def write(results: Results, out_dir: Path, stem: str, command: str) -> list[Path]:
    """Write STEM.json, STEM.md and (with matplotlib) STEM.png into `out_dir`; return the paths."""
    data = {"command": command, "machine": machine(), "versions": versions(), **as_dict(results)}
    paths = write_results(out_dir, stem, data, markdown(results, command))
    chart = _chart(results, out_dir / f"{stem}.png")
    return paths + ([chart] if chart else [])


def _chart(results: Results, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    facts = {f.engine: f for f in results.engines}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for engine in dict.fromkeys(r.engine for r in results.rows):
        rows = [r for r in results.rows if r.engine == engine and r.workload == "corpus" and r.batch_size]
        label = f"{engine} (min cos {_cos(facts[engine].cosine_min)})"
        ax.plot([r.batch_size for r in rows], [r.texts_per_s for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("texts/s (real-text corpus)")
    title = Path(results.artifact).name + (" — random weights" if results.random_weights else "")
    ax.set_title(f"{title}, {results.settings.threads} threads")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _batch(size: int) -> str:
    return "defaults" if size == DEFAULTS else str(size)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _cos(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"


def _recall(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
