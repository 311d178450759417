"""Semantic search over a help-centre FAQ: embed the documents once, then find the best answers to a query.

Data: examples/data/faq.tsv (62 answers, `id<TAB>text`) and examples/data/faq_queries.tsv (35 questions
worded as customers write them, `query<TAB>relevant ids`, comma-separated). The labelled questions give
recall@k and MRR, for the embeddings and for TF-IDF cosine on the same documents.

    python examples/semantic_search.py                          # labelled questions: a few shown, scores
    python examples/semantic_search.py "how do I get a refund for something I no longer want"  # your queries
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from bertx.similarity import top_k

from common import load_model, model_arguments, read_tsv


def rank_metrics(ranked: np.ndarray, relevant: Sequence[set[int]], k: int) -> dict[str, float]:
    """recall@1 and recall@k (share of each query's relevant documents found in its first 1 / k results,
    averaged over queries) and MRR (mean of 1 / rank of the first relevant result; 0 when none is ranked)."""
    recall_1, recall_k, reciprocal = [], [], []
    for rows, wanted in zip(ranked, relevant):
        recall_1.append(len(wanted & {int(r) for r in rows[:1]}) / len(wanted))
        recall_k.append(len(wanted & {int(r) for r in rows[:k]}) / len(wanted))
        ranks = [rank for rank, row in enumerate(rows, start=1) if int(row) in wanted]
        reciprocal.append(1.0 / ranks[0] if ranks else 0.0)
    return {
        "recall@1": float(np.mean(recall_1)),
        f"recall@{k}": float(np.mean(recall_k)),
        "mrr": float(np.mean(reciprocal)),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Search the FAQ; print hits for a few queries and the retrieval scores, and return the scores."""
    parser = model_arguments(__doc__)
    parser.add_argument("queries", nargs="*", help="your own queries (default: a few of the labelled ones)")
    parser.add_argument("-k", type=int, default=5, help="results per query, and the k of recall@k (default 5)")
    parser.add_argument("--show", type=int, default=4, help="labelled queries to show with their hits (default 4)")
    args = parser.parse_args(argv)
    model = load_model(args)

    docs = read_tsv("faq.tsv", 2)
    ids = [doc_id for doc_id, _ in docs]
    texts = [text for _, text in docs]
    labelled = read_tsv("faq_queries.tsv", 2)
    questions = [query for query, _ in labelled]
    relevant = [{ids.index(doc_id) for doc_id in wanted.split(",")} for _, wanted in labelled]

    start = time.perf_counter()
    corpus = model.encode(texts)  # once; unit vectors, so cosine is a dot product
    seconds = time.perf_counter() - start
    print(f"embedded {len(texts)} FAQ answers in {seconds:.2f} s ({args.artifact}, {args.variant})")

    shown = args.queries or questions[: args.show]
    hits = top_k(model.encode(shown), corpus, k=args.k)
    for query, rows, scores in zip(shown, hits.indices, hits.scores):
        print(f"\n{query}")
        for row, score in zip(rows[:3], scores[:3]):
            print(f"  {score:.3f}  {ids[row]:<20} {texts[row][:80]}")

    # Every document is ranked (k = corpus size) so MRR counts a relevant answer wherever it lands.
    ranked = top_k(model.encode(questions), corpus, k=len(texts)).indices
    embedded = rank_metrics(ranked, relevant, args.k)
    tfidf = TfidfVectorizer(sublinear_tf=True).fit(texts)
    words = top_k(tfidf.transform(questions).toarray(), tfidf.transform(texts).toarray(), k=len(texts)).indices
    baseline = rank_metrics(words, relevant, args.k)

    print(f"\n{len(questions)} labelled queries, {len(texts)} documents")
    print(f"  {'':<20}" + "".join(f"{name:>10}" for name in embedded))
    print(f"  {'TF-IDF cosine':<20}" + "".join(f"{value:>10.3f}" for value in baseline.values()))
    print(f"  {'sentence embeddings':<20}" + "".join(f"{value:>10.3f}" for value in embedded.values()))
    return {**embedded, **{f"tfidf_{name}": value for name, value in baseline.items()}, "embed_seconds": seconds}


if __name__ == "__main__":
    main()
