"""Embed a few sentences with an exported artifact (fp32 and int8) and print a similarity matrix.

Usage: python scripts/demo.py models/all-MiniLM-L6-v2
"""

from __future__ import annotations

import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

import bertx

SENTENCES = [
    "A man is eating food.",
    "Someone is having a meal.",
    "The stock market fell sharply today.",
    "Les marchés financiers ont chuté aujourd'hui.",
    "A cat is sleeping on the sofa 🐈",
]


def main(path: str) -> None:
    console = Console()
    vectors = {}
    for variant in ("fp32", "int8"):
        start = time.perf_counter()
        model = bertx.Model.from_pretrained(path, variant=variant)
        vectors[variant] = model.embed(SENTENCES, normalize=True)
        console.print(
            f"{variant}: {vectors[variant].shape[0]} × {vectors[variant].shape[1]} float32 "
            f"in {time.perf_counter() - start:.2f}s (load + embed)"
        )
    for i, sentence in enumerate(SENTENCES):
        console.print(f"  [{i}] {sentence}")
    table = Table(title="Cosine similarity, fp32 / int8")
    table.add_column("")
    for i in range(len(SENTENCES)):
        table.add_column(str(i), justify="right")
    sims = {v: x @ x.T for v, x in vectors.items()}  # unit vectors: dot product = cosine
    for i in range(len(SENTENCES)):
        cells = [f"{sims['fp32'][i, j]:.2f}/{sims['int8'][i, j]:.2f}" for j in range(len(SENTENCES))]
        table.add_row(f"[{i}]", *cells)
    console.print(table)
    agreement = (vectors["fp32"] * vectors["int8"]).sum(axis=1)
    console.print(f"int8 vs fp32 cosine per sentence: min {agreement.min():.4f}, mean {np.mean(agreement):.4f}")
    heavy = sorted(m for m in ("torch", "transformers", "optimum") if m in sys.modules)
    console.print(f"heavy modules loaded by this process: {heavy or 'none'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
