"""Similarity matrices, blockwise top-k and PCA against scipy and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from bertx.errors import OptionError
from bertx.similarity import pairwise, pca, top_k

rng = np.random.default_rng(0)
A = rng.normal(size=(7, 16)).astype(np.float32)
B = rng.normal(size=(50, 16)).astype(np.float32)


@pytest.mark.parametrize(
    "metric,reference",
    [
        ("cosine", lambda a, b: 1 - cdist(a, b, "cosine")),
        ("dot", lambda a, b: a.astype(np.float64) @ b.T.astype(np.float64)),
        ("euclidean", lambda a, b: cdist(a, b, "euclidean")),
        ("manhattan", lambda a, b: cdist(a, b, "cityblock")),
    ],
)
def test_pairwise_matches_scipy(metric: str, reference) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(pairwise(A, B, metric), reference(A, B), rtol=1e-4, atol=1e-4)
    assert pairwise(A, metric=metric).shape == (7, 7)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean", "manhattan"])
@pytest.mark.parametrize("block_size", [1, 7, 1000])
def test_top_k_in_blocks_equals_a_full_sort(metric: str, block_size: int) -> None:
    full = {
        "cosine": 1 - cdist(A, B, "cosine"),
        "dot": A.astype(np.float64) @ B.T,
        "euclidean": -cdist(A, B, "euclidean"),
        "manhattan": -cdist(A, B, "cityblock"),
    }[metric]
    want = np.argsort(-full, axis=1, kind="stable")[:, :5]
    hits = top_k(A, B, k=5, metric=metric, block_size=block_size)
    np.testing.assert_array_equal(hits.indices, want)
    sign = 1 if metric in ("cosine", "dot") else -1
    np.testing.assert_allclose(hits.scores, sign * np.take_along_axis(full, want, 1), rtol=1e-4, atol=1e-4)


def test_top_k_with_k_larger_than_corpus_and_memmap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "corpus.npy"
    np.save(path, B[:3])
    hits = top_k(A[:1], np.load(path, mmap_mode="r"), k=10)
    assert hits.indices.shape == (1, 3)


def test_pca_matches_scikit_learn() -> None:
    from sklearn.decomposition import PCA

    ours = pca(B, components=3)
    theirs = PCA(n_components=3).fit_transform(B.astype(np.float64))
    for i in range(3):  # components are defined up to their sign
        assert min(np.abs(ours[:, i] - theirs[:, i]).max(), np.abs(ours[:, i] + theirs[:, i]).max()) < 1e-3


def test_bad_arguments() -> None:
    with pytest.raises(OptionError, match="expected one of cosine, dot, euclidean, manhattan"):
        pairwise(A, B, "jaccard")
    with pytest.raises(OptionError, match="differ in width"):
        pairwise(A, B[:, :3])
    with pytest.raises(OptionError, match="k must be"):
        top_k(A, B, k=0)
    with pytest.raises(OptionError, match="components"):
        pca(A, components=40)
