"""The README's performance table, generated from bench/results/*.json.

`python -m bertx.bench.summary README.md bench/results/*.json` rewrites the part of README.md between
the `<!-- bench:start -->` and `<!-- bench:end -->` markers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def summary(results: list[dict[str, Any]]) -> str:
    """Corpus throughput at the largest batch, ratios, accuracy, latency, cold start and memory."""
    lines = []
    for data in results:
        settings = data["settings"]
        batch = max(settings["batch_sizes"])
        machine = data["machine"]
        name = Path(data["artifact"]).name
        weights = " (random weights: speed only)" if data["random_weights"] else ""
        texts = next((r["texts"] for r in data["rows"] if r["workload"] == "corpus" and r["batch_size"] == batch), 0)
        lines += [
            f"**{name}**{weights} — real-text corpus ({texts:,} texts), "
            f"batch {batch}, {settings['threads']} threads, {machine['cpu']} ({machine['cores']} cores, "
            f"CPU class {machine.get('cpu_class', '?')}: AVX2 {machine['avx2']}, VNNI {machine['vnni']}, "
            f"BF16 {machine.get('bf16', '?')}, AMX {machine.get('amx', '?')}). "
            f"Command: `{data['command']}`",
            "",
            "| engine | texts/s | × PyTorch fp32 | × sentence-transformers | min / mean cosine vs PyTorch | "
            "recall@10 of PyTorch's neighbours | p50 ms (batch 1) | cold start s | peak RSS MB, batch 32 | "
            "texts/s, defaults | peak RSS MB, defaults |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        facts = {f["engine"]: f for f in data["engines"]}
        defaults = {r["engine"]: r for r in data["rows"] if r["workload"] == "corpus" and r["batch_size"] == 0}
        for row in data["rows"]:
            if row["workload"] != "corpus" or row["batch_size"] != batch:
                continue
            fact = facts[row["engine"]]
            cos = "-" if fact["cosine_min"] is None else f"{fact['cosine_min']:.4f} / {fact['cosine_mean']:.4f}"
            ran = ", ".join(str(v) for v in fact.get("details", {}).values())
            engine = f"{row['engine']} ({ran})" if ran else row["engine"]
            default = defaults.get(row["engine"], {})
            # Results written before the default-settings row had one RSS figure, at batch 32.
            batch32_rss = fact.get("peak_rss_batch32_mb", fact["peak_rss_mb"] if not defaults else None)
            default_rss = fact["peak_rss_mb"] if defaults else None
            lines.append(
                f"| {engine} | {row['texts_per_s']:,.1f} | {_ratio(row['ratio_to_pytorch'])} "
                f"| {_ratio(row['ratio_to_st'])} | {cos} | {_num(fact.get('recall_at_10'), 3)} "
                f"| {fact['latency_ms'].get('p50', 0):.1f} "
                f"| {_num(fact['cold_start_s'], 2)} | {_num(batch32_rss, 0)} "
                f"| {_num(default.get('texts_per_s'), 1)} | {_num(default_rss, 0)} |"
            )
        for skipped in data["skipped"]:
            lines.append(f"| {skipped['name']} | skipped: {skipped['reason']} | | | | | | | | | |")
        lines.append("")
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rewrite(readme: Path, paths: list[Path]) -> None:
    """Replace the README's generated block with the summary of `paths`."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} … {END} block")
    block = summary([json.loads(p.read_text(encoding="utf-8")) for p in paths])
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{block}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    rewrite(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
