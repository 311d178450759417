"""Fine-tuned task heads: classifiers, taggers and cross-encoders exported with their logits, and the
runtime's classify / tag / rerank and text pairs, each checked against PyTorch on the same checkpoint.

Every head here is trained for a few steps inside the test on a small labelled set, so its weights
are real (not the random initialisation a fresh head has)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bertx
from bertx.errors import HeadError, InputError, OptionError
from bertx.manifest import HeadKind, Manifest, ProblemType
from bertx.tasks import Tagging

from conftest import make_tiny_model

SENTIMENT = [
    ("the good dog is new", "pos"),
    ("a good day in the park with sun", "pos"),
    ("we read a good new book", "pos"),
    ("people play good music at night", "pos"),
    ("the cat was good", "pos"),
    ("the bad rain was old", "neg"),
    ("a bad day with rain", "neg"),
    ("the old man is bad", "neg"),
    ("bad food at the city park", "neg"),
    ("this code is bad", "neg"),
]
ANIMALS = {"cat", "dog", "fox"}
PEOPLE = {"man", "woman", "people"}
TAGGED = [
    "the quick brown fox jump over the lazy dog",
    "a man and a woman walk in the park",
    "people read a book with the cat",
    "the dog and the fox run at night",
    "a woman eat food in the city",
]


def _copy_tokenizer(source: Path, target: Path) -> None:
    for name in ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    special = source / "special_tokens_map.json"
    if special.is_file():
        shutil.copy(special, target / special.name)


def _train(model: Any, batch: dict[str, Any], labels: Any, steps: int, lr: float = 3e-3) -> Any:
    """A few optimizer steps on one batch: enough to move the head's weights off their initialisation."""
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def make_classifier(
    base: Path,
    folder: Path,
    pairs: bool = False,
    problem_type: str | None = None,
    steps: int = 30,
    lr: float = 3e-3,
) -> Path:
    """Fine-tune `base` as a sequence classifier on the sentiment set (as pairs: relevance of b to a)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    texts = [text for text, _ in SENTIMENT]
    if pairs:
        # A cross-encoder: one output, high when the second text repeats the first one's sentiment word.
        labels_text = [label for _, label in SENTIMENT]
        firsts = ["good" if label == "pos" else "bad" for label in labels_text]
        seconds = texts[:5] + texts[5:]
        swapped = texts[5:] + texts[:5]
        batch = tokenizer(firsts * 2, seconds + swapped, padding=True, return_tensors="pt")
        labels = torch.tensor([1.0] * 10 + [0.0] * 10).unsqueeze(1)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    elif problem_type == "multi_label_classification":
        names = {0: "positive", 1: "negative", 2: "animal"}
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        labels = torch.tensor(
            [[lab == "pos", lab == "neg", any(w in ANIMALS for w in t.split())] for t, lab in SENTIMENT],
            dtype=torch.float32,
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=3, id2label=names, label2id={v: k for k, v in names.items()}, problem_type=problem_type
        )
    else:
        names = {0: "neg", 1: "pos"}
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        labels = torch.tensor([1 if label == "pos" else 0 for _, label in SENTIMENT])
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=2, id2label=names, label2id={v: k for k, v in names.items()}
        )
    _train(model, dict(batch), labels, steps, lr).save_pretrained(folder)
    _copy_tokenizer(base, folder)
    return folder


def make_tagger(base: Path, folder: Path, steps: int = 40) -> Path:
    """Fine-tune `base` as an IOB2 tagger of animals and people (labels on each word's first piece)."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    names = ["O", "B-ANIMAL", "I-ANIMAL", "B-PER", "I-PER"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    words = [text.split() for text in TAGGED]
    batch = tokenizer(TAGGED, padding=True, return_tensors="pt")
    labels = torch.full(batch["input_ids"].shape, -100)
    for row, text_words in enumerate(words):
        previous = None
        for position, word in enumerate(batch.word_ids(row)):
            if word is not None and word != previous:
                token = text_words[word]
                labels[row, position] = 1 if token in ANIMALS else 3 if token in PEOPLE else 0
            previous = word
    model = AutoModelForTokenClassification.from_pretrained(
        base, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    _train(model, dict(batch), labels, steps).save_pretrained(folder)
    _copy_tokenizer(base, folder)
    return folder


def torch_logits(
    folder: Path, texts: Sequence[Any], kind: HeadKind, max_length: int | None = None, truncation_side: str = "right"
) -> list[np.ndarray]:
    """The checkpoint's logits in PyTorch, one text (or pair) at a time, without padding (cut at `max_length`
    on `truncation_side` when given)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    auto = (
        AutoModelForTokenClassification if kind is HeadKind.TOKEN_CLASSIFICATION else AutoModelForSequenceClassification
    )
    model = auto.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, truncation_side=truncation_side)
    cut = {"truncation": True, "max_length": max_length} if max_length is not None else {}
    results = []
    for item in texts:
        inputs = (
            tokenizer(*item, return_tensors="pt", **cut)
            if isinstance(item, tuple)
            else tokenizer(item, return_tensors="pt", **cut)
        )
        with torch.inference_mode():
            results.append(model(**inputs).logits[0].numpy())
    return results


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = make_tiny_model(tmp_path_factory.mktemp("cls-base") / "model")
    return make_classifier(base, tmp_path_factory.mktemp("cls") / "model")


@pytest.fixture(scope="module")
def classifier_artifact(classifier: Path, export_tiny: Callable[..., Path]) -> Path:
    from bertx.exporter import Int8Options

    # split-dynamic takes 7-bit weights on CPUs without VNNI, where full-range u8 × s8 pairs saturate.
    split = Int8Options(recipe="split-dynamic", allow_below_target=True)
    return export_tiny(classifier, fp16=True, int8=True, int8_options=split)


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = make_tiny_model(tmp_path_factory.mktemp("tag-base") / "model", seed=1)
    return make_tagger(base, tmp_path_factory.mktemp("tag") / "model")


NEW_TEXTS = ["a good new day", "the rain is bad and old", "good", "the lazy fox was bad at code", ""]


def test_classifier_exports_its_head_and_classifies_like_pytorch(classifier: Path, classifier_artifact: Path) -> None:
    manifest = Manifest.load(classifier_artifact)
    assert manifest.head is not None
    assert manifest.head.kind is HeadKind.SEQUENCE_CLASSIFICATION
    assert manifest.head.labels == ("neg", "pos")
    assert manifest.head.problem_type is ProblemType.SINGLE_LABEL
    assert manifest.outputs[-1] == f"hidden_states.{manifest.architecture.num_layers}"  # logits kept apart
    for precision, variant in manifest.variants.items():
        assert variant.parity is not None and variant.parity.head is not None, precision
        assert variant.parity.head.items == variant.parity.texts
        # The best label agrees with PyTorch's on every proof text; INT8 may flip a close call.
        assert variant.parity.head.agreement >= (0.9 if precision is bertx.Precision.INT8 else 1.0), precision
    assert manifest.variants[bertx.Precision.FP32].parity.head.max_abs < 1e-4  # type: ignore[union-attr]

    model = bertx.Model.from_pretrained(classifier_artifact)
    assert model.labels == ("neg", "pos")
    got = model.classify(NEW_TEXTS)
    expected = [_softmax(row) for row in torch_logits(classifier, NEW_TEXTS, HeadKind.SEQUENCE_CLASSIFICATION)]
    for result, probs in zip(got, expected):
        np.testing.assert_allclose(result.probabilities, probs, atol=1e-5)
        assert result.label == ("neg", "pos")[int(probs.argmax())] and result.labels == (result.label,)
        assert result.score == pytest.approx(float(probs.max()), abs=1e-5)
    assert model.classify("a good new day").label == got[0].label
    assert got[0].scores(model.labels)["pos"] == pytest.approx(float(expected[0][1]), abs=1e-5)
    # The few training steps made a real head: it fits the labelled set it saw.
    train = model.classify([text for text, _ in SENTIMENT])
    assert [r.label for r in train] == [label for _, label in SENTIMENT]
    fp16 = bertx.Model.from_pretrained(classifier_artifact, variant="fp16").classify(NEW_TEXTS)
    assert [r.label for r in fp16] == [r.label for r in got]
    int8 = bertx.Model.from_pretrained(classifier_artifact, variant="int8").classify(NEW_TEXTS)
    assert sum(a.label == b.label for a, b in zip(int8, got)) >= len(got) - 1


def test_text_pairs_carry_segment_ids_like_pytorch(classifier: Path, classifier_artifact: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    pairs = [("the good dog", "a cat was bad"), ("rain", "the sun is new and good at night")]
    model = bertx.Model.from_pretrained(classifier_artifact)
    expected = [_softmax(row) for row in torch_logits(classifier, pairs, HeadKind.SEQUENCE_CLASSIFICATION)]
    for result, probs in zip(model.classify(pairs), expected):
        np.testing.assert_allclose(result.probabilities, probs, atol=1e-5)
    # Sentence vectors of pairs: mean over both segments, as PyTorch computes with token_type_ids = 1 on b.
    tokenizer = AutoTokenizer.from_pretrained(classifier)
    inputs = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    assert int(inputs["token_type_ids"].sum()) > 0
    encoder = AutoModel.from_pretrained(classifier).eval()
    with torch.inference_mode():
        states = encoder(**inputs).last_hidden_state.numpy()
    mask = inputs["attention_mask"].numpy()[..., None]
    mean = (states * mask).sum(axis=1) / mask.sum(axis=1)
    np.testing.assert_allclose(model.encode(pairs, pooling="mean"), mean, atol=1e-5)
    mixed = model.encode([pairs[0], "the good dog"], pooling="mean")
    np.testing.assert_allclose(mixed[0], mean[0], atol=1e-5)
    assert not np.allclose(mixed[0], mixed[1], atol=1e-3)


def test_task_errors_are_clear(classifier_artifact: Path, tiny_artifact: Path) -> None:
    bare = bertx.Model.from_pretrained(tiny_artifact)
    with pytest.raises(HeadError, match=r"bare encoder.*ForSequenceClassification"):
        bare.classify(["a text"])
    assert bare.labels == ()
    model = bertx.Model.from_pretrained(classifier_artifact)
    with pytest.raises(HeadError, match="token-classification head"):
        model.tag(["a text"])
    with pytest.raises(InputError, match="item 1 is tuple of 3 items"):
        model.classify(["ok", ("a", "b", "c")])  # type: ignore[list-item]
    with pytest.raises(InputError, match="item 0 \\(text_b of a pair\\) is int"):
        model.classify([("a", 3)])  # type: ignore[list-item]
    with pytest.raises(OptionError, match="pairs give sentence vectors only"):
        model.encode([("a", "b")], pooling="none")
    with pytest.raises(OptionError, match="threshold"):
        model.classify(["a"], threshold=2.0)
    with pytest.raises(OptionError, match="top_k"):
        model.rerank("q", ["a"], top_k=0)
    assert model.classify([]) == []


def test_multi_label_head_uses_sigmoids(tmp_path: Path, tiny_bert: Path, export_tiny: Callable[..., Path]) -> None:
    folder = make_classifier(tiny_bert, tmp_path / "multi", problem_type="multi_label_classification")
    artifact = export_tiny(folder)
    model = bertx.Model.from_pretrained(artifact)
    assert Manifest.load(artifact).head.problem_type is ProblemType.MULTI_LABEL  # type: ignore[union-attr]
    texts = ["the good dog", "bad rain", "a good cat"]
    logits = torch_logits(folder, texts, HeadKind.SEQUENCE_CLASSIFICATION)
    for result, row in zip(model.classify(texts, threshold=0.4), logits):
        sigmoid = 1 / (1 + np.exp(-row))
        np.testing.assert_allclose(result.probabilities, sigmoid, atol=1e-5)
        assert result.labels == tuple(n for n, p in zip(model.labels, sigmoid) if p >= 0.4)
    single = model.classify(texts, multi_label=False)
    np.testing.assert_allclose(single[0].probabilities, _softmax(logits[0]), atol=1e-5)


def test_tagger_labels_words_like_pytorch(tagger: Path, export_tiny: Callable[..., Path]) -> None:
    artifact = export_tiny(tagger)
    manifest = Manifest.load(artifact)
    assert manifest.head is not None and manifest.head.kind is HeadKind.TOKEN_CLASSIFICATION
    report = manifest.variants[bertx.Precision.FP32].parity
    assert report is not None and report.head is not None and report.head.items == report.tokens
    model = bertx.Model.from_pretrained(artifact)
    check_tags(tagger, model, ["The lazy dog and a woman read.", "people walk", "foxes jump over the man"])
    # The head learned its set: animals and people are found on a training sentence.
    seen = model.tag(TAGGED[1])
    assert [(e.label, e.text) for e in seen.entities()] == [("PER", "man"), ("PER", "woman")]


def check_tags(folder: Path, model: bertx.Model, texts: list[str]) -> None:
    """`Model.tag` against PyTorch: each word (transformers' word ids and spans) takes its first piece's label."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    logits = torch_logits(folder, texts, HeadKind.TOKEN_CLASSIFICATION)
    for text, tagged, rows in zip(texts, model.tag(texts), logits):
        encoding = tokenizer(text)
        firsts: dict[int, int] = {}
        for position, word in enumerate(encoding.word_ids()):
            if word is not None:
                firsts.setdefault(word, position)
        spans = [encoding.word_to_chars(w) for w in firsts]
        assert list(tagged.labels) == [model.labels[int(rows[p].argmax())] for p in firsts.values()]
        assert list(tagged.spans) == [(s.start, s.end) for s in spans]
        assert list(tagged.words) == [text[s.start : s.end] for s in spans]
        np.testing.assert_allclose(tagged.probabilities, _softmax(rows[list(firsts.values())]), atol=1e-5)


def test_entities_group_iob2_labels() -> None:
    text = "Ada Lovelace met Charles Babbage in London ."
    words = text.split()
    starts = [text.index(w) for w in words]
    tagged = Tagging(
        text=text,
        words=tuple(words),
        spans=tuple((s, s + len(w)) for s, w in zip(starts, words)),
        labels=("B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "O"),
        scores=np.array([0.9, 0.7, 1, 0.8, 0.6, 1, 0.5, 1], dtype=np.float32),
        probabilities=np.zeros((8, 3), dtype=np.float32),
    )
    found = [(e.label, e.text, round(e.score, 3)) for e in tagged.entities()]
    assert found == [("PER", "Ada Lovelace", 0.8), ("PER", "Charles Babbage", 0.7), ("LOC", "London", 0.5)]
    adjacent = Tagging(
        text, tagged.words, tagged.spans, ("B-PER", "B-PER", *["O"] * 6), tagged.scores, tagged.probabilities
    )
    assert [e.text for e in adjacent.entities()] == ["Ada", "Lovelace"]


def test_cross_encoder_reranks_like_pytorch(tmp_path: Path, tiny_bert: Path, export_tiny: Callable[..., Path]) -> None:
    folder = make_classifier(tiny_bert, tmp_path / "rerank", pairs=True, steps=150)
    artifact = export_tiny(folder)
    model = bertx.Model.from_pretrained(artifact)
    query = "good"
    documents = ["a bad day with rain", "the good dog is new", "we read a good new book", "this code is bad"]
    logits = torch_logits(folder, [(query, d) for d in documents], HeadKind.SEQUENCE_CLASSIFICATION)
    scores = 1 / (1 + np.exp(-np.array([row[0] for row in logits])))
    ranked = model.rerank(query, documents)
    assert [r.index for r in ranked] == list(np.argsort(-scores, kind="stable"))
    np.testing.assert_allclose([r.score for r in ranked], np.sort(scores)[::-1], atol=1e-5)
    assert {r.document for r in ranked[:2]} == {documents[1], documents[2]}  # the head learned relevance
    assert [r.index for r in model.rerank(query, documents, top_k=1)] == [ranked[0].index]
    assert model.rerank(query, []) == []


@pytest.mark.parametrize("model_type", ["distilbert", "roberta"])
def test_distilbert_and_roberta_heads(tmp_path: Path, model_type: str, export_tiny: Callable[..., Path]) -> None:
    base = make_tiny_model(tmp_path / "base", model_type=model_type)
    folder = (
        make_classifier(base, tmp_path / "cls") if model_type == "distilbert" else make_tagger(base, tmp_path / "tag")
    )
    artifact = export_tiny(folder)
    manifest = Manifest.load(artifact)
    assert manifest.head is not None and manifest.variants[bertx.Precision.FP32].parity.passed  # type: ignore[union-attr]
    model = bertx.Model.from_pretrained(artifact)
    texts = ["the good dog", "a man eat food at night"]
    kind = manifest.head.kind
    logits = torch_logits(folder, texts, kind)
    if kind is HeadKind.SEQUENCE_CLASSIFICATION:
        for result, row in zip(model.classify(texts), logits):
            np.testing.assert_allclose(result.probabilities, _softmax(row), atol=1e-5)
    else:
        check_tags(folder, model, texts)


@pytest.mark.slow
def test_fine_tuned_minilm_classifier_without_torch(tmp_path: Path, minilm_source: Path) -> None:
    """The packaged real MiniLM, fine-tuned for a few steps: exported, classified by a process that never
    imports torch, with PyTorch's own probabilities as the reference (INT8 heads: the tiny classifier)."""
    from bertx.exporter import ExportOptions, export_model

    folder = make_classifier(minilm_source, tmp_path / "minilm-cls", steps=6, lr=1e-4)
    manifest = export_model(ExportOptions(model=str(folder), output=tmp_path / "artifact"), quiet_mode=True).manifest
    assert manifest.head is not None and manifest.head.labels == ("neg", "pos")
    fp32 = manifest.variants[bertx.Precision.FP32].parity
    assert fp32 is not None and fp32.head is not None and fp32.head.agreement == 1.0
    texts = [
        "What a wonderful, sunny afternoon in the park.",
        "The food was cold and the service terrible.",
        *NEW_TEXTS,
    ]
    pairs = [("good", "the good dog is new"), ("bad", "the good dog is new")]
    expected = [_softmax(r) for r in torch_logits(folder, [*texts, *pairs], HeadKind.SEQUENCE_CLASSIFICATION)]
    script = (
        "import json, sys, bertx\n"
        "model = bertx.Model.from_pretrained(sys.argv[1])\n"
        "items = [tuple(i) if isinstance(i, list) else i for i in json.loads(sys.argv[2])]\n"
        "out = [r.probabilities.tolist() for r in model.classify(items)]\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'optimum') if m in sys.modules)\n"
        "print(json.dumps({'probabilities': out, 'heavy': heavy}))\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "artifact"), json.dumps([*texts, *pairs])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["heavy"] == []
    np.testing.assert_allclose(np.array(result["probabilities"]), np.stack(expected), atol=1e-5)
