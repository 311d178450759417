"""How much of exact search compact vectors keep (`bertx embed --precision / --truncate-dim`), and their size.

    .venv/bin/python bench/compact_recall.py models/all-MiniLM-L6-v2 [--queries 100] [--rescore-multiplier 10]
        [--dims full,256,128] [--out bench/results/compact-all-MiniLM-L6-v2.json]

Embeds the real corpus (bench/data/corpus.txt) with the artifact's fp32 variant and defaults. The queries
are --queries corpus texts, evenly spaced; each query's own text is left out of its results. The truth is
exact float32 cosine search at the full width (top 10). For each truncate_dim × precision (float32, int8,
uint8, binary, ubinary), recall@10 of:

- "compact only": the compact scores alone (int8/uint8 dot product of bucket centres, query quantized with
  the corpus' ranges; binary: Hamming distance);
- "rescore, compact corpus": the best k × multiplier rescored with the float query against the compact
  vectors read back (bucket centres, or ±1 for binary) — no float vectors stored;
- "rescore, float corpus": the same candidates rescored against the float vectors at that width (what
  `embed --keep-float` stores; they can stay on disk, only k × multiplier rows are read per query).

Bytes per vector are those of the searched (compact) vectors; the ratio is against full-width float32.
Prints a markdown table; --out also writes JSON with the machine and versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from pathlib import Path
from typing import Any

import numpy as np

import bertx
from bertx.bench.results_io import write_json
from bertx.compact import DEFAULT_RESCORE_MULTIPLIER, VectorPrecision, calibration_ranges, quantize, search, truncate
from bertx.cpu import cpu_info

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)]))


def without_self(indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each query's top K with its own row removed (searched with K + 1)."""
    return np.stack([[i for i in hit if i != row][:K] for hit, row in zip(indices, rows)])


def measure(floats: np.ndarray, rows: np.ndarray, dims: list[int | None], multiplier: int) -> list[dict[str, Any]]:
    full = floats.shape[1]
    truth = without_self(search(floats[rows], floats, "float32", K + 1, rescore_multiplier=0).indices, rows)
    results = []
    for dim in dims:
        cut = truncate(floats, dim)
        queries = cut[rows]
        for precision in VectorPrecision:
            ranges = calibration_ranges(cut) if precision.needs_ranges else None
            packed = quantize(cut, precision, ranges)

            def found(rescore: int, float_corpus: np.ndarray | None, p: VectorPrecision = precision) -> float:
                hits = search(queries, packed, p, K + 1, ranges, float_corpus, rescore)  # noqa: B023
                return recall(without_self(hits.indices, rows), truth)

            compact_only = found(0, None)
            exact = precision is VectorPrecision.FLOAT32
            results.append(
                {
                    "dim": dim or full,
                    "precision": precision.value,
                    "bytes_per_vector": int(packed.shape[1] * packed.itemsize),
                    "size_ratio": round(full * 4 / (packed.shape[1] * packed.itemsize), 1),
                    "recall_compact_only": compact_only,
                    "recall_rescore_compact": compact_only if exact else found(multiplier, None),
                    "recall_rescore_float": compact_only if exact else found(multiplier, cut),
                }
            )
    return results


def markdown(results: list[dict[str, Any]], multiplier: int) -> str:
    lines = [
        f"| dim | precision | bytes/vector | smaller by | recall@10 compact only "
        f"| rescore ×{multiplier}, compact corpus | rescore ×{multiplier}, float corpus |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['dim']} | {r['precision']} | {r['bytes_per_vector']} | {r['size_ratio']}× "
            f"| {r['recall_compact_only']:.3f} | {r['recall_rescore_compact']:.3f} | {r['recall_rescore_float']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rescore-multiplier", type=int, default=DEFAULT_RESCORE_MULTIPLIER)
    parser.add_argument("--dims", default="full,256,128", help="truncate_dims to try; full = no truncation")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    texts = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    model = bertx.Model.from_pretrained(args.artifact, variant="fp32")
    floats = np.asarray(model.encode(texts, batch_size=16), dtype=np.float32)
    rows = np.linspace(0, len(texts) - 1, args.queries).astype(int)
    dims = [None if d == "full" else int(d) for d in args.dims.split(",")]
    results = measure(floats, rows, dims, args.rescore_multiplier)
    print(
        f"{args.artifact.name}: {len(texts)} texts × {floats.shape[1]} dims, {len(rows)} corpus texts as queries "
        f"(self excluded), truth = exact float32 cosine top-{K} at full width\n"
    )
    print(markdown(results, args.rescore_multiplier))
    if args.out is not None:
        cpu = cpu_info()
        report = {
            "artifact": str(args.artifact),
            "texts": len(texts),
            "queries": len(rows),
            "k": K,
            "rescore_multiplier": args.rescore_multiplier,
            "machine": {"platform": platform.platform(), **dataclasses.asdict(cpu)},
            "versions": {"bertx": bertx.__version__, "numpy": np.__version__},
            "results": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, report)


if __name__ == "__main__":
    main()
