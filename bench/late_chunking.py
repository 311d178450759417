"""Late chunking against chunk-then-embed on the repository's retrieval example, side by side in one run.

The FAQ answers of examples/data/faq.tsv are grouped into help pages by topic (the prefix of their ids:
acct, order, ship, …), as a help centre shows them. Chunk-then-embed embeds each answer alone; late chunking
embeds each page once and pools each answer's span from the page's token vectors (pages longer than the
model's window are covered by overlapping windows). The labelled questions of faq_queries.tsv are searched
against the answers both ways: recall@1, recall@5 and MRR, and the time to embed every answer (median of 5).

    python -m bertx.bench.late_chunking models/all-MiniLM-L6-v2 [--out bench/results]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import bertx
from bertx.similarity import top_k

from .report import machine
from .results_io import write_results

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"


def read_tsv(name: str) -> list[tuple[str, str]]:
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line.strip():
            first, second = line.split("\t")[:2]
            rows.append((first, second))
    return rows


def pages(
    answers: Sequence[tuple[str, str]], one_page: bool = False
) -> tuple[list[str], list[list[tuple[int, int]]], list[int]]:
    """One page per topic (or, with `one_page`, all on one page; answers in file order, a blank line between
    them), each answer's span in its page, and for each answer (in file order) its row among all the chunks."""
    by_topic: dict[str, list[int]] = {}
    for index, (answer_id, _) in enumerate(answers):
        by_topic.setdefault("all" if one_page else answer_id.split("-")[0], []).append(index)
    texts, spans, rows = [], [], [0] * len(answers)
    row = 0
    for members in by_topic.values():
        text, page_spans = "", []
        for index in members:
            if text:
                text += "\n\n"
            page_spans.append((len(text), len(text) + len(answers[index][1])))
            text += answers[index][1]
            rows[index] = row
            row += 1
        texts.append(text)
        spans.append(page_spans)
    return texts, spans, rows


def metrics(ranked: np.ndarray, relevant: Sequence[set[int]], k: int = 5) -> dict[str, float]:
    first, at_k, reciprocal = [], [], []
    for rows, wanted in zip(ranked, relevant):
        first.append(len(wanted & {int(r) for r in rows[:1]}) / len(wanted))
        at_k.append(len(wanted & {int(r) for r in rows[:k]}) / len(wanted))
        ranks = [rank for rank, r in enumerate(rows, start=1) if int(r) in wanted]
        reciprocal.append(1.0 / ranks[0] if ranks else 0.0)
    return {"recall@1": float(np.mean(first)), f"recall@{k}": float(np.mean(at_k)), "mrr": float(np.mean(reciprocal))}


def timed(run: Callable[[], np.ndarray], repeats: int = 5) -> tuple[np.ndarray, float]:
    run()  # warm-up: the first call of each shape prepares kernels
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return result, float(np.median(seconds))


def run(artifact: Path, variant: str = "fp32") -> dict[str, Any]:
    model = bertx.Model.from_pretrained(artifact, variant=variant)
    answers = read_tsv("faq.tsv")
    ids = [answer_id for answer_id, _ in answers]
    labelled = read_tsv("faq_queries.tsv")
    relevant = [{ids.index(i) for i in wanted.split(",")} for _, wanted in labelled]
    queries = model.encode([query for query, _ in labelled], normalize_embeddings=True)
    texts, spans, rows = pages(answers)
    whole, whole_spans, whole_rows = pages(answers, one_page=True)

    def late(texts: list[str], spans: list[list[tuple[int, int]]], rows: list[int]) -> np.ndarray:
        chunks = model.encode_chunks(texts, spans=spans, normalize_embeddings=True)
        return np.concatenate([c.vectors for c in chunks])[rows]

    alone, alone_s = timed(lambda: model.encode([text for _, text in answers], normalize_embeddings=True))
    pooled, late_s = timed(lambda: late(texts, spans, rows))
    one, one_s = timed(lambda: late(whole, whole_spans, whole_rows))
    windows = sum(1 + len(e.overflowing) for e in model.tokenizer.encode_windows(texts, 32))
    whole_windows = sum(1 + len(e.overflowing) for e in model.tokenizer.encode_windows(whole, 32))
    results = {}
    for name, corpus, seconds in (
        ("chunk-then-embed", alone, alone_s),
        (f"late chunking, {len(texts)} topic pages ({windows} windows)", pooled, late_s),
        (f"late chunking, the FAQ as one page ({whole_windows} windows)", one, one_s),
    ):
        ranked = np.asarray(top_k(queries, corpus, k=5).indices)
        results[name] = {**metrics(ranked, relevant), "seconds": seconds, "texts_per_s": len(answers) / seconds}
    return {
        "artifact": str(artifact),
        "variant": variant,
        "answers": len(answers),
        "pages": len(texts),
        "queries": len(labelled),
        "max_seq_length": model.max_seq_length,
        "results": results,
        "machine": machine(),
    }


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        f"# Late chunking vs chunk-then-embed: {Path(data['artifact']).name} ({data['variant']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, AVX-512 {m['avx512']}, VNNI {m['vnni']}, BF16 {m['bf16']}.  ",
        f"{data['answers']} FAQ answers on {data['pages']} topic pages, or on one page; windows of at most "
        f"{data['max_seq_length']} tokens overlapping by 32; {data['queries']} labelled questions.",
        "",
        "| method | recall@1 | recall@5 | MRR | seconds to embed every answer | answers/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in data["results"].items():
        lines.append(
            f"| {name} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['mrr']:.3f} | {r['seconds']:.3f} | "
            f"{r['texts_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--out", type=Path, default=None, help="write late-chunking-ARTIFACT.json and .md here")
    args = parser.parse_args(argv)
    data = run(args.artifact, args.variant)
    text = markdown(data)
    print(text, end="")
    if args.out is not None:
        for path in write_results(args.out, f"late-chunking-{args.artifact.name}", data, text):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
