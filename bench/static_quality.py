"""How much a static word-vector table (`bertx vocab`) keeps of the contextual model, and how much faster it is.

    .venv/bin/python bench/static_quality.py models/all-MiniLM-L6-v2 [--pairs examples/data/sts_pairs.tsv]
        [--table /tmp/minilm-static.npz] [--out bench/results/static-all-MiniLM-L6-v2.json]

Reports, for the artifact's contextual model (`Model.encode` with the artifact's defaults, fp32) and for a
static table built from it (`bertx.StaticEmbeddings`, every vocabulary entry alone, last layer):

(a) sentence similarity: Spearman correlation of cosine scores against the gold scores of a pairs file
    (`score<TAB>sentence_a<TAB>sentence_b`), and the share of the contextual model's correlation kept;
(b) agreement with the contextual model on the real corpus (bench/data/corpus.txt): Spearman correlation
    of all pairwise cosines among the first --agreement texts, and recall@10 of the static nearest
    neighbours against the contextual ones (self excluded);
(c) speed on the first --texts corpus texts: texts/s, medians of --repeats runs, for the contextual model
    (--threads threads) and the static table (one Python thread; "cold" is a freshly loaded table whose
    word cache is empty, "warm" the same table again), and the table's build time and file size.

The table is built (and saved to --table when given) unless --table names an existing file, which is
then loaded and its build time not measured. Prints a markdown table; --out also writes JSON with the
machine and versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import bertx
from bertx.bench.harness import neighbour_recall
from bertx.bench.results_io import write_json
from bertx.cpu import cpu_info
from bertx.static_build import build_table, read_words

CORPUS = Path(__file__).resolve().parent / "data" / "corpus.txt"
PAIRS = Path(__file__).resolve().parents[1] / "examples" / "data" / "sts_pairs.tsv"


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (ties get their average rank), with scipy when it is installed."""
    try:
        from scipy.stats import spearmanr
    except ImportError:
        return float(np.corrcoef(_ranks(np.asarray(a)), _ranks(np.asarray(b)))[0, 1])
    return float(spearmanr(a, b).statistic)


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return np.asarray(sums[inverse] / counts[inverse])


def read_pairs(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Gold scores and sentence pairs from a `score<TAB>a<TAB>b` file (blank and # lines skipped)."""
    scores, left, right = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise SystemExit(f"{path}, line {number}: expected score<TAB>sentence_a<TAB>sentence_b")
        try:
            scores.append(float(parts[0]))
        except ValueError:
            if not scores:
                continue  # a header line
            raise SystemExit(f"{path}, line {number}: the score {parts[0]!r} is not a number") from None
        left.append(parts[1])
        right.append(parts[2])
    return np.asarray(scores), left, right


def pair_cosines(encode: Callable[[list[str]], np.ndarray], left: list[str], right: list[str]) -> np.ndarray:
    vectors = _unit(encode(left + right))
    return np.asarray((vectors[: len(left)] * vectors[len(left) :]).sum(axis=1))


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return np.asarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))


def agreement(contextual: np.ndarray, static: np.ndarray, k: int = 10) -> dict[str, float]:
    """Spearman of all pairwise cosines, and recall@k of static neighbours against contextual ones."""
    a, b = _unit(contextual), _unit(static)
    upper = np.triu_indices(len(a), k=1)
    recall = neighbour_recall(static, contextual, k)
    return {"pairwise_spearman": spearman((a @ a.T)[upper], (b @ b.T)[upper]), f"recall@{k}": recall}


def texts_per_s(run: Callable[[], object], count: int, repeats: int) -> tuple[float, list[float]]:
    """Median texts/s over `repeats` timed runs."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates), rates


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="artifact folder written by `bertx export`")
    parser.add_argument("--pairs", type=Path, default=PAIRS, help="score<TAB>a<TAB>b file [%(default)s]")
    parser.add_argument("--table", type=Path, default=None, help="static table .npz to load, or to build and keep")
    parser.add_argument("--words", type=Path, default=None, help="word list for the table (`bertx vocab --words`)")
    parser.add_argument("--layers", default=None, help="layers for the table, as `bertx vocab --layers` [last]")
    parser.add_argument("--texts", type=int, default=1000, help="corpus texts timed [%(default)s]")
    parser.add_argument("--agreement", type=int, default=300, help="corpus texts compared [%(default)s]")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--threads", type=int, default=2, help="threads of the contextual model [%(default)s]")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    model = bertx.Model.from_pretrained(args.artifact, threads=args.threads)
    build_seconds: float | None = None
    if args.table is not None and args.table.is_file():
        table = bertx.StaticEmbeddings.load(args.table)
        table_file = args.table
    else:
        from bertx.layers import parse_layers

        words = read_words(args.words) if args.words is not None else None
        layers = parse_layers(args.layers) if args.layers is not None else None
        start = time.perf_counter()
        built = build_table(model, words, layers=layers)
        build_seconds = time.perf_counter() - start
        scratch = tempfile.TemporaryDirectory(prefix="bertx-static-")  # removed at exit, unless --table
        table_file = args.table or Path(scratch.name) / "table.npz"
        built.save(table_file)
        table = bertx.StaticEmbeddings.load(table_file)

    scores, left, right = read_pairs(args.pairs)
    quality = {
        name: spearman(pair_cosines(encode, left, right), scores)
        for name, encode in (("contextual", model.encode), ("static", table.encode))
    }

    corpus = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    sample = corpus[: args.agreement]
    agree = agreement(np.asarray(model.encode(sample)), table.encode(sample))

    timed = corpus[: args.texts]
    model.encode(timed[:64])  # warm-up: first-call allocations
    contextual_rate, contextual_runs = texts_per_s(lambda: model.encode(timed), len(timed), args.repeats)
    fresh: list[bertx.StaticEmbeddings] = []

    def cold() -> None:
        fresh[-1].encode(timed)

    cold_runs = []
    for _ in range(args.repeats):
        fresh.append(bertx.StaticEmbeddings.load(table_file))
        cold_runs.append(texts_per_s(cold, len(timed), 1)[0])
    static_cold = statistics.median(cold_runs)
    static_warm, warm_runs = texts_per_s(lambda: fresh[-1].encode(timed), len(timed), args.repeats)

    cpu = cpu_info()
    results: dict[str, Any] = {
        "artifact": str(args.artifact),
        "model_id": model.manifest.source.id,
        "table": {
            "file": str(table_file) if args.table is not None else None,
            "size_mb": table_file.stat().st_size / 1e6,
            "build_seconds": build_seconds,
            "pieces": table.pieces,
            "stored_words": len(table.stored_words),
            "dim": table.dim,
            "layers": list(table.info.layers),
            "dtype": table.info.dtype,
        },
        "pairs": {"file": str(args.pairs), "count": len(scores)},
        "sts_spearman": {**quality, "kept": quality["static"] / quality["contextual"]},
        "agreement": {"texts": len(sample), **agree},
        "speed": {
            "texts": len(timed),
            "threads": args.threads,
            "repeats": args.repeats,
            "contextual_texts_per_s": contextual_rate,
            "static_cold_texts_per_s": static_cold,
            "static_warm_texts_per_s": static_warm,
            "ratio_cold": static_cold / contextual_rate,
            "runs": {"contextual": contextual_runs, "static_cold": cold_runs, "static_warm": warm_runs},
        },
        "machine": {
            "cpu": cpu.model,
            "avx2": cpu.avx2,
            "avx512": cpu.avx512,
            "vnni": cpu.vnni,
            "bf16": cpu.bf16,
            "cores": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "versions": {name: _version(name) for name in ("bertx", "onnxruntime", "tokenizers", "numpy", "scipy")},
    }
    print(markdown(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, results)
    return results


def markdown(r: dict[str, Any]) -> str:
    sts, agree, speed, table, cpu = r["sts_spearman"], r["agreement"], r["speed"], r["table"], r["machine"]
    built = "loaded" if table["build_seconds"] is None else f"{table['build_seconds']:.1f} s"
    flags = ", ".join(f"{flag.upper()} {cpu[flag]}" for flag in ("avx2", "avx512", "vnni", "bf16"))
    lines = [
        f"**{r['model_id']}**: static table ({table['pieces']:,} pieces, {table['stored_words']:,} words, "
        f"dim {table['dim']}, layers {table['layers']}, {table['dtype']}, {table['size_mb']:.1f} MB, built {built}) "
        f"against the contextual model (fp32, {speed['threads']} threads). {cpu['cpu']} ({cpu['cores']} cores, "
        f"{flags}), load average {cpu['load_average_before']:.2f} before, {cpu['load_average_after']:.2f} after.",
        "",
        "| measure | contextual | static | static ÷ contextual |",
        "|---|---:|---:|---:|",
        f"| STS Spearman ({r['pairs']['count']} pairs) | {sts['contextual']:.4f} | {sts['static']:.4f} "
        f"| {sts['kept']:.1%} |",
        f"| pairwise-cosine Spearman vs contextual ({agree['texts']} corpus texts) | 1 | "
        f"{agree['pairwise_spearman']:.4f} | |",
        f"| recall@10 of nearest neighbours vs contextual ({agree['texts']} texts) | 1 | {agree['recall@10']:.3f} | |",
        f"| texts/s, {speed['texts']} corpus texts, median (range) of {speed['repeats']}, cold cache | "
        f"{_rate(speed, 'contextual')} | {_rate(speed, 'static_cold')} | {speed['ratio_cold']:,.0f}× |",
        f"| texts/s, warm cache | {_rate(speed, 'contextual')} | {_rate(speed, 'static_warm')} | "
        f"{speed['static_warm_texts_per_s'] / speed['contextual_texts_per_s']:,.0f}× |",
    ]
    return "\n".join(lines)


def _rate(speed: dict[str, Any], name: str) -> str:
    runs = speed["runs"][name]
    return f"{speed[f'{name}_texts_per_s']:,.0f} ({min(runs):,.0f}–{max(runs):,.0f})"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
