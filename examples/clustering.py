"""Topic discovery: KMeans on sentence embeddings, scored against the true topics, next to TF-IDF.

Data: examples/data/topics.tsv, 240 one-sentence texts in 6 topics (the labels are used only to score).
KMeans runs with k = the number of true topics, on the embeddings and on TF-IDF vectors of the same texts.
Adjusted Rand index and V-measure compare the clusters with the topics (1 = the same partition, ~0 =
chance); the silhouette (cosine) says how well separated the clusters are in their own space.

    python examples/clustering.py [--artifact models/all-MiniLM-L6-v2] [--variant fp32] [--threads 2]
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import adjusted_rand_score, silhouette_score, v_measure_score

from common import load_model, model_arguments, read_tsv


def scores(features: Any, topics: Sequence[str], k: int, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """KMeans cluster labels for `features` (dense or sparse), and their ARI, V-measure and silhouette."""
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
    return labels, {
        "ari": float(adjusted_rand_score(topics, labels)),
        "v_measure": float(v_measure_score(topics, labels)),
        "silhouette": float(silhouette_score(features, labels, metric="cosine")),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Cluster topics.tsv both ways; print and return ARI, V-measure and silhouette for each."""
    parser = model_arguments(__doc__)
    parser.add_argument("--seed", type=int, default=0, help="KMeans random state (default 0)")
    args = parser.parse_args(argv)
    model = load_model(args)

    rows = read_tsv("topics.tsv", 2)
    topics = [label for label, _ in rows]
    texts = [text for _, text in rows]
    k = len(set(topics))

    start = time.perf_counter()
    vectors = model.encode(texts)
    seconds = time.perf_counter() - start
    print(f"embedded {len(texts)} texts in {seconds:.2f} s ({args.artifact}, {args.variant}); KMeans, k = {k}")

    results: dict[str, float] = {"embed_seconds": seconds}
    print(f"  {'':<20}{'ARI':>8}{'V-measure':>11}{'silhouette':>12}")
    found: dict[str, np.ndarray] = {}
    for name, features in (("tfidf", TfidfVectorizer(sublinear_tf=True).fit_transform(texts)), ("embedding", vectors)):
        found[name], measured = scores(features, topics, k, args.seed)
        results |= {f"{name}_{key}": value for key, value in measured.items()}
        title = "TF-IDF" if name == "tfidf" else "sentence embeddings"
        print(f"  {title:<20}{measured['ari']:>8.3f}{measured['v_measure']:>11.3f}{measured['silhouette']:>12.3f}")

    print("embedding clusters (size: most common true topic, share):")
    for cluster_id in range(k):
        members = [topic for topic, label in zip(topics, found["embedding"]) if label == cluster_id]
        topic, count = Counter(members).most_common(1)[0]
        print(f"  {len(members):>3}: {topic:<11} {count / len(members):.0%}")
    return results


if __name__ == "__main__":
    main()
