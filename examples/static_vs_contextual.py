"""Static word vectors against the contextual model on sentence similarity: quality and speed.

A static table (`bertx.StaticEmbeddings`) holds one vector per vocabulary entry, made once by running each
entry alone through the encoder; a sentence is then the mean of its words' vectors, with no inference.
This example scores both on examples/data/sts_pairs.tsv (127 sentence pairs with gold similarity 0–5,
`score<TAB>sentence_a<TAB>sentence_b`): Spearman correlation between cosine similarity and the gold
scores, and texts per second embedding the pairs' sentences.

Building the table embeds the whole vocabulary (30,522 entries for MiniLM, half a minute on 2 cores). Pass
--table PATH to keep it: the table is loaded from PATH when the file exists, else built and saved there
(`bertx vocab ARTIFACT -o PATH` builds the same table from the command line).

    python examples/static_vs_contextual.py --table /tmp/minilm-static.npz
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import bertx
from bertx.static_build import build_table

from common import load_model, model_arguments, read_tsv


def throughput(embed: Callable[[list[str]], np.ndarray], texts: list[str], min_seconds: float) -> float:
    """Texts per second of `embed`, repeating the whole list until `min_seconds` have passed."""
    embed(texts[:8])  # warm-up: session start, caches
    runs, start = 0, time.perf_counter()
    while True:
        embed(texts)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return runs * len(texts) / elapsed


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (a zero vector scores 0)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(axis=1) / np.maximum(norms, 1e-12))


def load_or_build(model: bertx.Model, table: str | None) -> tuple[bertx.StaticEmbeddings, str]:
    """The static table: read from `table` when that file exists, else built (and saved when named)."""
    if table is not None and Path(table).is_file():
        try:
            return bertx.StaticEmbeddings.load(table), f"loaded from {table}"
        except bertx.BertxError as exc:
            raise SystemExit(f"cannot use {table}: {exc}") from None
    start = time.perf_counter()
    static = build_table(model)
    how = f"built in {time.perf_counter() - start:.1f} s"
    if table is not None:
        static.save(table)
        how += f", saved to {table}"
    return static, how


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Score the static table and the model on sts_pairs.tsv; print and return Spearman and speed."""
    parser = model_arguments(__doc__)
    parser.add_argument("--table", default=None, help="static table .npz to reuse, or to build and save if missing")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="time spent measuring each speed (0.5)")
    args = parser.parse_args(argv)
    model = load_model(args)
    static, how = load_or_build(model, args.table)
    print(f"static table: {static.pieces} vocabulary entries × {static.dim}, {how}")

    rows = read_tsv("sts_pairs.tsv", 3)
    gold = np.array([float(score) for score, _, _ in rows])
    first = [a for _, a, _ in rows]
    second = [b for _, _, b in rows]
    sentences = first + second

    results: dict[str, float] = {"pairs": float(len(rows))}
    print(f"{len(rows)} sentence pairs, gold similarity 0–5; {len(sentences)} sentences timed")
    print(f"  {'':<30}{'Spearman':>9}{'texts/s':>11}")
    embedders: dict[str, Callable[[list[str]], np.ndarray]] = {
        "static": static.encode,
        "contextual": model.encode,
    }
    for name, embed in embedders.items():
        vectors = embed(sentences)
        rho = float(spearmanr(cosines(vectors[: len(rows)], vectors[len(rows) :]), gold).statistic)
        speed = throughput(embed, sentences, args.min_seconds)
        results |= {f"{name}_spearman": rho, f"{name}_texts_per_s": speed}
        title = "static table (mean of words)" if name == "static" else f"contextual ({args.variant})"
        print(f"  {title:<30}{rho:>9.3f}{speed:>11,.0f}")
    ratio = results["static_texts_per_s"] / results["contextual_texts_per_s"]
    results["speedup"] = ratio
    kept = results["static_spearman"] / results["contextual_spearman"]
    print(f"the static table is {ratio:,.0f}× faster and keeps {kept:.0%} of the contextual model's Spearman")
    return results


if __name__ == "__main__":
    main()
