"""What running on Ray costs: `bertx embed --engine ray` against single-process bertx on the same corpus.

    .venv/bin/python bench/ray_overhead.py models/all-MiniLM-L6-v2 [--repeats 3] [--shard-rows 500]
        [--copies 1] [--out bench/results/ray-all-MiniLM-L6-v2.json]

The corpus is the bench's real text (bench/data/corpus.txt: its lines and the sentences in them, about
3,700 texts) as JSONL. Each run is the whole job, end to end: read the texts, load the model, embed, write
Parquet. Single process: `Model.encode` with all the threads the machine has, and one Parquet file. Ray (a
local Ray started once, not timed): 1 worker with all the CPUs, and one worker per CPU, writing shards;
the actors' start (each loads the model) is timed, as a job pays it. The rounds interleave the engines;
medians of --repeats. Prints a markdown table; --out also writes JSON with the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import bertx
from bertx.bench.results_io import write_json
from bertx.cpu import cpu_budget, cpu_info
from bertx.embedding_files import write_parquet

CORPUS = Path(__file__).parent / "data" / "corpus.txt"


def corpus_texts() -> list[str]:
    """The corpus's lines and the sentences in them: a few thousand real texts of mixed lengths."""
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = [s.strip() for line in lines for s in re.split(r"(?<=[.!?])\s+", line) if len(s.strip()) > 3]
    return lines + sentences


def single_process(artifact: str, source: Path, out: Path, threads: int) -> float:
    """The same job in one process: read the JSONL, load, embed, write one Parquet file of ids and vectors."""
    started = time.perf_counter()
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    model = bertx.Model.from_pretrained(artifact, threads=threads)
    vectors = np.asarray(model.encode([row["text"] for row in rows]))
    write_parquet(out, {"id": [row["id"] for row in rows]}, vectors, {"artifact": artifact})
    return time.perf_counter() - started


def on_ray(artifact: str, source: Path, out: Path, workers: int, cpus: int, shard_rows: int) -> float:
    from bertx.distributed import CorpusJob, embed_corpus

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    embed_corpus(
        CorpusJob(artifact=artifact, output=str(out), shard_rows=shard_rows),
        str(source),
        workers=workers,
        cpus_per_worker=cpus,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-rows", type=int, default=500)
    parser.add_argument("--copies", type=int, default=1, help="Repeat the corpus, to see the fixed costs amortized.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import logging

    import ray

    logging.getLogger("ray").setLevel(logging.WARNING)
    corpus = corpus_texts() * args.copies
    cpus = cpu_budget().usable
    work = Path(tempfile.mkdtemp(prefix="bertx-ray-bench-"))
    source = work / "corpus.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(corpus)), encoding="utf-8")
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    engines: dict[str, Any] = {
        f"single process, {cpus} threads": lambda: single_process(args.artifact, source, work / "one.parquet", cpus),
        f"Ray, 1 worker × {cpus} CPUs": lambda: on_ray(args.artifact, source, work / "r1", 1, cpus, args.shard_rows),
    }
    if cpus > 1:
        engines[f"Ray, {cpus} workers × 1 CPU"] = lambda: on_ray(
            args.artifact, source, work / "rn", cpus, 1, args.shard_rows
        )
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    try:
        for _ in range(args.repeats):
            for name, run in engines.items():
                seconds[name].append(run())
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(next(iter(seconds.values())))
    rows: list[dict[str, Any]] = []
    for name, runs in seconds.items():
        median = statistics.median(runs)
        rows.append(
            {
                "engine": name,
                "seconds": [round(s, 2) for s in runs],
                "median_s": round(median, 2),
                "texts_per_s": round(len(corpus) / median, 1),
                "vs_single": round(base / median, 3),
            }
        )
    cpu = cpu_info()
    flags = ", ".join(
        name for name, on in (("AVX2", cpu.avx2), ("AVX-512", cpu.avx512), ("VNNI", cpu.vnni), ("BF16", cpu.bf16)) if on
    )
    print(
        f"{len(corpus)} texts, {args.artifact}, fp32, shards of {args.shard_rows}; {cpu.model} ({flags}), {cpus} CPUs"
    )
    print("| engine | texts/s (median) | × single process | runs (s) |\n|---|---:|---:|---|")
    for row in rows:
        listed = ", ".join(str(s) for s in row["seconds"])
        print(f"| {row['engine']} | {row['texts_per_s']} | {row['vs_single']:.2f} | {listed} |")
    if args.out:
        record = {
            "texts": len(corpus),
            "copies": args.copies,
            "artifact": args.artifact,
            "shard_rows": args.shard_rows,
            "rows": rows,
            "machine": {"cpu": cpu.model, "flags": flags, "cpus": cpus, "python": platform.python_version()},
            "versions": {"bertx": bertx.__version__, "ray": ray.__version__},
        }
        write_json(args.out, record)


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    main()
