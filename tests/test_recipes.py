"""Embedding recipes (layers, pooling modes, token, word and all-layer outputs) on the real packaged
all-MiniLM-L6-v2, against the same math done in PyTorch on transformers' output_hidden_states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bertx
from bertx.errors import InputError, OptionError

from conftest import MINILM_INT8_MIN_COSINE
from reference import cosines, torch_hidden_states

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Unaffordable riverbank housing isn't new 🏠",
    "Der Bürgermeister eröffnete das Museum am 3. Mai.",
    "ok",
    "",
]
L = 6

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def states(minilm_source: Path) -> list[list[np.ndarray]]:
    return torch_hidden_states(minilm_source, TEXTS, 256)


@pytest.fixture(scope="module")
def model(minilm_artifact: Path) -> bertx.Model:
    return bertx.Model.from_pretrained(minilm_artifact)


def pool_np(tokens: np.ndarray, pooling: str) -> np.ndarray:
    if pooling == "cls":
        return tokens[0]
    if pooling == "mean":
        return tokens.mean(0)
    if pooling == "max":
        return tokens.max(0)
    if pooling == "mean_sqrt_len":
        return tokens.sum(0) / np.sqrt(len(tokens))
    raise ValueError(pooling)


def combine_np(arrays: list[np.ndarray], how: str, weights: list[float] | None = None) -> np.ndarray:
    if how == "mean":
        return np.mean(arrays, axis=0)
    if how == "sum":
        return np.sum(arrays, axis=0)
    if how == "concat":
        return np.concatenate(arrays, axis=-1)
    assert weights is not None
    return np.sum([w * a for w, a in zip(weights, arrays)], axis=0)


def expected(
    states: list[list[np.ndarray]], layers: list[int], how: str, pooling: str, before: bool, w: Any = None
) -> np.ndarray:
    rows = []
    for per_text in states:
        chosen = [per_text[i] for i in layers]
        if before:
            rows.append(combine_np([pool_np(c, pooling) for c in chosen], how, w))
        else:
            rows.append(pool_np(combine_np(chosen, how, w), pooling))
    return np.stack(rows)


@pytest.mark.parametrize(
    "layers,indices",
    [
        (-1, [6]),
        (-2, [5]),
        (0, [0]),
        ([1, 3], [1, 3]),
        (slice(2, 5), [2, 3, 4]),
        ("last4", [3, 4, 5, 6]),
        ("all", [1, 2, 3, 4, 5, 6]),
        ("all+embeddings", [0, 1, 2, 3, 4, 5, 6]),
    ],
)
@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_layer_selection_and_pooling(
    model: bertx.Model, states: Any, layers: Any, indices: list[int], pooling: str
) -> None:
    got = model.encode(TEXTS, pooling=pooling, layers=layers, normalize_embeddings=False, batch_size=2)
    np.testing.assert_allclose(got, expected(states, indices, "mean", pooling, False), atol=1e-4)


@pytest.mark.parametrize("how", ["mean", "sum", "concat", "weighted"])
@pytest.mark.parametrize("before", [False, True])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_combinations_before_and_after_pooling(
    model: bertx.Model, states: Any, how: str, before: bool, pooling: str
) -> None:
    weights = [0.1, 0.2, 0.3, 0.4] if how == "weighted" else None
    got = model.encode(
        TEXTS,
        pooling=pooling,
        layers="last4",
        combine=how,
        layer_weights=weights,
        pool_before_combine=before,
        normalize_embeddings=False,
    )
    want = expected(states, [3, 4, 5, 6], how, pooling, before, weights)
    assert got.shape == want.shape == (len(TEXTS), 384 * (4 if how == "concat" else 1))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_article_recipes(model: bertx.Model, states: Any) -> None:
    cls_every_layer = model.encode(TEXTS, pooling="cls", layers="all", normalize_embeddings=False)
    np.testing.assert_allclose(
        cls_every_layer, np.stack([np.mean([s[i][0] for i in range(1, 7)], 0) for s in states]), atol=1e-4
    )
    last4_mean = model.encode(TEXTS, pooling="mean", layers="last4", normalize_embeddings=False)
    np.testing.assert_allclose(last4_mean, np.stack([np.mean(s[3:7], 0).mean(0) for s in states]), atol=1e-4)
    sqrt_len = model.encode(TEXTS, pooling="mean_sqrt_len", normalize_embeddings=False)
    np.testing.assert_allclose(sqrt_len, expected(states, [6], "mean", "mean_sqrt_len", False), atol=1e-4)
    first_last = model.encode(TEXTS, pooling="first_last_avg", normalize_embeddings=False)
    np.testing.assert_allclose(first_last, np.stack([((s[1] + s[6]) / 2).mean(0) for s in states]), atol=1e-4)


def test_normalize_single_text_and_list_output(model: bertx.Model, states: Any) -> None:
    one = model.encode(TEXTS[0])
    assert one.shape == (384,) and abs(float(np.linalg.norm(one)) - 1) < 1e-5
    want = states[0][6].mean(0)
    assert cosines(one[None], want[None])[0] > 0.99999
    as_list = model.encode(TEXTS, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == len(TEXTS) and as_list[0].shape == (384,)


def test_token_embeddings_without_padding(model: bertx.Model, states: Any, minilm_source: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(minilm_source)
    tokens = model.encode(TEXTS, pooling="none")
    for text, result, per_text in zip(TEXTS, tokens, states):
        assert isinstance(result, bertx.TokenEmbeddings) and result.text == text
        assert result.vectors.shape == per_text[6].shape
        np.testing.assert_allclose(result.vectors, per_text[6], atol=1e-4)
        assert result.tokens[0] == "[CLS]" and result.tokens[-1] == "[SEP]" and result.special[0]
        reference = hf(text, return_offsets_mapping=True)
        assert list(result.tokens) == reference.tokens()
        assert [tuple(o) for o in result.offsets] == [tuple(o) for o in reference["offset_mapping"]]


def test_all_hidden_states_per_text(model: bertx.Model, states: Any) -> None:
    every = model.hidden_states(TEXTS, batch_size=3)
    for ours, theirs in zip(every, states):
        assert ours.shape == (L + 1, len(theirs[0]), 384)
        np.testing.assert_allclose(ours, np.stack(theirs), atol=1e-4)


@pytest.mark.parametrize("merge", ["mean", "first", "last", "max"])
def test_word_embeddings_merge_sub_word_pieces(
    model: bertx.Model, minilm_source: Path, states: Any, merge: str
) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(minilm_source)
    words = model.encode_words(TEXTS, merge=merge)
    for text, result, per_text in zip(TEXTS, words, states):
        enc = hf(text, return_offsets_mapping=True)
        groups: dict[int, list[int]] = {}
        for pos, word in enumerate(enc.word_ids()):
            if word is not None:
                groups.setdefault(word, []).append(pos)
        last = per_text[6]
        merged = {
            "mean": [last[p].mean(0) for p in groups.values()],
            "first": [last[p[0]] for p in groups.values()],
            "last": [last[p[-1]] for p in groups.values()],
            "max": [last[p].max(0) for p in groups.values()],
        }[merge]
        want = np.stack(merged) if merged else np.zeros((0, 384))
        spans = [(enc["offset_mapping"][p[0]][0], enc["offset_mapping"][p[-1]][1]) for p in groups.values()]
        assert list(result.spans) == spans
        assert list(result.words) == [text[a:b] for a, b in spans]
        np.testing.assert_allclose(result.vectors, want, atol=1e-4)
    assert words[1].words[:3] == ("Unaffordable", "riverbank", "housing")


def test_pre_split_words_and_a_word_alone(model: bertx.Model, states: Any) -> None:
    split = model.encode_words([["Unaffordable", "riverbank", "housing"]])[0]
    assert split.words == ("Unaffordable", "riverbank", "housing")
    assert split.text == "Unaffordable riverbank housing" and split.spans[1] == (13, 22)
    apple = model.word_embedding("apple")
    assert apple.shape == (384,)
    alone = model.encode_words(["apple"])[0]
    np.testing.assert_allclose(apple, alone.vectors[0], atol=1e-6)
    with pytest.raises(InputError):
        model.word_embedding("  ")


def test_only_needed_outputs_are_fetched(minilm_artifact: Path) -> None:
    model = bertx.Model.from_pretrained(minilm_artifact)
    asked: list[list[str]] = []
    real_run = model.runner.run

    class Recorder:
        def __getattr__(self, name: str) -> Any:
            return getattr(model.runner, name)

        def run(self, names: list[str], feeds: Any) -> Any:
            asked.append(list(names))
            return real_run(names, feeds)

    model.runner = Recorder()  # type: ignore[assignment]
    model.encode(TEXTS[:2])
    model.encode(TEXTS[:2], layers=[-2, 2], pooling="cls")
    model.encode(TEXTS[:2], pooling="first_last_avg")
    assert asked == [
        ["hidden_states.6"],
        ["hidden_states.2", "hidden_states.5"],
        ["hidden_states.1", "hidden_states.6"],
    ]


def test_int8_recipes_stay_close(minilm_artifact: Path, states: Any) -> None:
    int8 = bertx.Model.from_pretrained(minilm_artifact, variant="int8")
    got = int8.encode(TEXTS[:4], pooling="mean", layers="last4", normalize_embeddings=False)
    assert cosines(got, expected(states[:4], [3, 4, 5, 6], "mean", "mean", False)).min() >= MINILM_INT8_MIN_COSINE
    cls_all = int8.encode(TEXTS[:4], pooling="cls", layers="all", normalize_embeddings=False)
    want = expected(states[:4], list(range(1, 7)), "mean", "cls", False)
    assert cosines(cls_all, want).min() >= MINILM_INT8_MIN_COSINE


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"pooling": "avg"}, "expected one of cls, mean, max, mean_sqrt_len, first_last_avg"),
        ({"layers": 7}, "out of range"),
        ({"layers": "last5"}, "unknown layers"),
        ({"layers": []}, "empty"),
        ({"layers": slice(9, 12)}, "selects nothing"),
        ({"combine": "median"}, "expected one of mean, sum, concat, weighted"),
        ({"layers": "last4", "combine": "weighted", "layer_weights": [1, 2]}, "needs 4 layer_weights, got 2"),
        ({"layer_weights": [1.0]}, "only used with combine='weighted'"),
        ({"pooling": "first_last_avg", "layers": -1}, "chooses its own layers"),
        ({"batch_size": 0}, "positive integer"),
    ],
)
def test_wrong_keyword_values_list_the_valid_ones(model: bertx.Model, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        model.encode(TEXTS[:1], **kwargs)


def test_long_texts_in_windows(model: bertx.Model, minilm_source: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bertx.exporter.parity import parity_texts

    long_text = " ".join(parity_texts()[-2:])
    hf = AutoTokenizer.from_pretrained(minilm_source)
    reference = AutoModel.from_pretrained(minilm_source).eval()
    windows = hf(
        long_text,
        truncation=True,
        max_length=256,
        stride=16,
        return_overflowing_tokens=True,
        return_tensors="pt",
        padding=True,
    )
    means, counts = [], []
    with torch.inference_mode():
        for ids, mask in zip(windows["input_ids"], windows["attention_mask"]):
            n = int(mask.sum())
            last = reference(input_ids=ids[None, :n], attention_mask=mask[None, :n]).last_hidden_state[0]
            means.append(last.mean(0).numpy())
            counts.append(n)
    assert len(counts) >= 3
    want = np.average(np.stack(means), axis=0, weights=counts)
    got = model.encode([long_text, "short"], long_texts="chunk", chunk_overlap=16, normalize_embeddings=False)
    np.testing.assert_allclose(got[0], want, atol=1e-4)
    short = model.encode(["short"], normalize_embeddings=False)
    np.testing.assert_allclose(got[1], short[0], atol=1e-5)

    tokens = model.encode_tokens([long_text], long_texts="chunk", chunk_overlap=16)[0]
    full = hf(long_text)
    assert list(tokens.tokens) == full.tokens() and len(tokens.tokens) > 600
    first = windows["attention_mask"][0].sum()
    with torch.inference_mode():
        head = reference(input_ids=windows["input_ids"][:1, :first]).last_hidden_state[0].numpy()
    np.testing.assert_allclose(tokens.vectors[: first - 1], head[:-1], atol=1e-4)

    words = model.encode_words([long_text], long_texts="chunk")[0]
    assert len(words.words) == len({w for w in full.word_ids() if w is not None})
    with pytest.raises(OptionError, match="chunk_overlap"):
        model.encode([long_text], long_texts="chunk", chunk_overlap=500)
    with pytest.raises(OptionError, match="expected one of truncate, truncate_left, chunk"):
        model.encode([long_text], long_texts="split")
