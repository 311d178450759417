"""Topic classification: logistic regression on sentence embeddings, next to a TF-IDF bag of words.

Data: examples/data/topics.tsv, 240 one-sentence texts in 6 topics. Every 4th line is held out (60
texts); those were written to avoid their topic's most common words, so they test meaning more than
vocabulary. Both classifiers are the same scikit-learn LogisticRegression; only the features differ.

    python examples/classify_logreg.py [--artifact models/all-MiniLM-L6-v2] [--variant fp32] [--threads 2]
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from common import load_model, model_arguments, read_tsv


def held_out(count: int) -> np.ndarray:
    """True for the test rows: every 4th line of the file (lines 4, 8, 12, …)."""
    return np.asarray(np.arange(count) % 4 == 3)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Train on 3/4 of topics.tsv, print held-out accuracy of embeddings and of TF-IDF, return them."""
    parser = model_arguments(__doc__)
    parser.add_argument("--show", type=int, default=3, help="held-out texts to show that only one model gets right")
    args = parser.parse_args(argv)
    model = load_model(args)

    rows = read_tsv("topics.tsv", 2)
    labels = np.array([label for label, _ in rows])
    texts = [text for _, text in rows]
    test = held_out(len(rows))
    train_texts = [t for t, is_test in zip(texts, test) if not is_test]
    test_texts = [t for t, is_test in zip(texts, test) if is_test]

    start = time.perf_counter()
    vectors = model.encode(texts)  # the artifact's defaults: mean pooling, unit length
    seconds = time.perf_counter() - start
    embedded = LogisticRegression(max_iter=2000).fit(vectors[~test], labels[~test])
    predicted = embedded.predict(vectors[test])

    tfidf = TfidfVectorizer(sublinear_tf=True)
    words = LogisticRegression(max_iter=2000, C=10.0).fit(tfidf.fit_transform(train_texts), labels[~test])
    baseline = words.predict(tfidf.transform(test_texts))

    truth = labels[test]
    results = {
        "train": float(len(train_texts)),
        "test": float(len(test_texts)),
        "topics": float(len(set(labels))),
        "chance": float(np.max(np.unique(truth, return_counts=True)[1]) / len(truth)),
        "embedding_accuracy": float(np.mean(predicted == truth)),
        "tfidf_accuracy": float(np.mean(baseline == truth)),
        "embed_seconds": seconds,
    }
    print(
        f"{len(texts)} texts, {int(results['topics'])} topics: train on {len(train_texts)}, "
        f"test on {len(test_texts)} held-out texts (every 4th line)"
    )
    print(f"embedded {len(texts)} texts in {seconds:.2f} s ({args.artifact}, {args.variant})")
    print(f"  majority class                      accuracy {results['chance']:.3f}")
    print(f"  TF-IDF + LogisticRegression         accuracy {results['tfidf_accuracy']:.3f}")
    print(f"  sentence embeddings + LogisticReg.  accuracy {results['embedding_accuracy']:.3f}")
    shown = [i for i in range(len(truth)) if predicted[i] == truth[i] != baseline[i]][: args.show]
    if shown:
        print("held out, right with embeddings, wrong with TF-IDF:")
        for i in shown:
            print(f"  [{truth[i]}, TF-IDF said {baseline[i]}] {test_texts[i]}")
    return results


if __name__ == "__main__":
    main()
