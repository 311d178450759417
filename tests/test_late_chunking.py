"""Late chunking against the same computation written independently in PyTorch: transformers' tokenizer cuts
the document into overlapping windows (its own `stride`), the model embeds each window, the repeated tokens
are dropped, and each chunk averages the tokens that start inside it. Then the front-ends: HTTP and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bertx
from bertx.errors import InputError, OptionError

from conftest import run_cli

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food in the park!",
    "Was the river bank new?",
    "The people read a good book about music and money.",
]


def document(repeats: int) -> str:
    return " ".join(f"{s[:-1]} {i}{s[-1]}" for i in range(repeats) for s in SENTENCES)


def torch_late_chunks(
    folder: Path, text: str, spans: list[tuple[int, int]], window: int, overlap: int, use_max: bool = False
) -> np.ndarray:
    """Each span's vector: the tokens starting in it, from windows embedded separately and stitched."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    windows = tokenizer(
        text,
        truncation=True,
        max_length=window,
        stride=overlap,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    starts: list[int] = []
    rows: list[np.ndarray] = []
    for w, ids in enumerate(windows["input_ids"]):
        with torch.inference_mode():
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
        content = [i for i, special in enumerate(windows["special_tokens_mask"][w]) if not special]
        for i in content[overlap:] if w > 0 else content:
            starts.append(windows["offset_mapping"][w][i][0])
            rows.append(hidden[i])
    tokens, begin = np.stack(rows), np.array(starts)
    out = []
    for a, b in spans:
        inside = tokens[(begin >= a) & (begin < b)]
        out.append(inside.max(axis=0) if use_max else inside.mean(axis=0))
    return np.stack(out)


def sentence_spans_of(text: str) -> list[tuple[int, int]]:
    """Where each of the test's sentences is in the document, found by plain string search."""
    spans, start = [], 0
    for i in range(len(text)):
        if text[i] in ".!?" and (i + 1 == len(text) or text[i + 1] == " "):
            spans.append((start, i + 1))
            start = i + 2
    return spans


@pytest.mark.parametrize("repeats", [1, 8])  # one window; about four windows of 128 tokens
def test_chunks_equal_the_pytorch_computation(tiny_artifact: Path, tiny_bert: Path, repeats: int) -> None:
    model = bertx.Model.from_pretrained(tiny_artifact)
    text = document(repeats)
    spans = sentence_spans_of(text)
    assert len(spans) == 4 * repeats
    window, overlap = model.max_seq_length, 32
    want = torch_late_chunks(tiny_bert, text, spans, window, overlap)

    by_sentence = model.encode_chunks([text], normalize_embeddings=False)[0]
    assert list(by_sentence.spans) == spans and by_sentence.chunks[1] == SENTENCES[1].replace("!", " 0!")
    np.testing.assert_allclose(by_sentence.vectors, want, atol=1e-5)
    given = model.encode_chunks([text], spans=[spans], normalize_embeddings=False)[0]
    np.testing.assert_allclose(given.vectors, want, atol=1e-5)

    as_max = model.encode_chunks([text], spans=[spans[:3]], pooling="max", normalize_embeddings=False)[0]
    np.testing.assert_allclose(
        as_max.vectors, torch_late_chunks(tiny_bert, text, spans[:3], window, overlap, True), atol=1e-5
    )
    if repeats > 1:  # in context: a sentence's vector is not what it gets embedded alone
        alone = model.encode([text[a:b] for a, b in spans[:4]], normalize_embeddings=False)
        assert np.abs(alone - by_sentence.vectors[:4]).max() > 1e-3


def test_chunks_of_n_tokens_and_bad_spans(tiny_artifact: Path) -> None:
    model = bertx.Model.from_pretrained(tiny_artifact)
    text = document(2)
    chunks = model.encode_chunks([text, "one two"], chunk_size=7)
    (encoding,) = model.tokenizer.encode([text])
    assert len(chunks[0].chunks) == -(-(len(encoding.ids) - 2) // 7)
    assert chunks[1].chunks == ("one two",)
    assert model.encode_chunks([""])[0].vectors.shape == (0, model.hidden_size)
    with pytest.raises(InputError, match="holds no token"):
        model.encode_chunks(["a b  c"], spans=[[(3, 5)]])
    with pytest.raises(InputError, match="span"):
        model.encode_chunks(["abc"], spans=[[(2, 9)]])
    with pytest.raises(OptionError, match="mean or max"):
        model.encode_chunks(["abc"], pooling="cls")
    with pytest.raises(OptionError, match="chunk_size"):
        model.encode_chunks(["abc"], chunk_size=0)


def test_http_and_cli_give_the_python_chunks(tiny_artifact: Path, tmp_path: Path) -> None:
    import httpx

    from servers import start

    model = bertx.Model.from_pretrained(tiny_artifact)
    texts = [document(3), "A short one. And another."]
    want = model.encode_chunks(texts, chunk_size=9)
    running = start(tiny_artifact, tmp_path)
    try:
        reply = httpx.post(f"{running.url}/embed/chunks", json={"inputs": texts, "chunk_size": 9}, timeout=60)
        assert reply.status_code == 200, reply.text
        for got, expected in zip(reply.json()["results"], want):
            assert got["chunks"] == list(expected.chunks)
            assert [tuple(span) for span in got["spans"]] == list(expected.spans)
            np.testing.assert_allclose(got["vectors"], expected.vectors, atol=1e-6)
        spans = {"inputs": ["abc def"], "spans": [[[0, 3], [4, 7]]]}
        given = httpx.post(f"{running.url}/embed/chunks", json=spans).json()["results"][0]["chunks"]
        assert given == ["abc", "def"]
        bad = httpx.post(f"{running.url}/embed/chunks", json={"inputs": ["abc"], "spans": [[[2, 9]]]})
        assert bad.status_code == 400 and "span" in bad.json()["error"]["message"]
        no_token = {"inputs": ["x", "a b  c"], "spans": [[[0, 1]], [[3, 5]]]}
        empty = httpx.post(f"{running.url}/embed/chunks", json=no_token)
        assert empty.status_code == 400 and "text 1: the chunk at characters 3…5 holds no token" in empty.text
    finally:
        assert running.stop() == 0

    source = tmp_path / "docs.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "chunks.jsonl"
    result = run_cli("embed", str(tiny_artifact), "-i", str(source), "--chunks", "--chunk-size", "9", "-o", str(out))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["1", "2"]
    for line, expected in zip(lines, want):
        assert line["chunks"] == list(expected.chunks)
        np.testing.assert_allclose(line["vectors"], expected.vectors, atol=1e-6)


def test_the_retrieval_bench_measures_both_ways(tiny_artifact: Path, tmp_path: Path) -> None:
    from bertx.bench.late_chunking import main, pages, read_tsv

    answers = read_tsv("faq.tsv")
    texts, spans, rows = pages(answers)
    assert sorted(rows) == list(range(len(answers)))
    flat = [(page, span) for page, page_spans in zip(texts, spans) for span in page_spans]
    assert [page[a:b] for page, (a, b) in (flat[r] for r in rows)] == [text for _, text in answers]
    main([str(tiny_artifact), "--out", str(tmp_path)])
    data = json.loads((tmp_path / f"late-chunking-{tiny_artifact.name}.json").read_text())
    assert len(data["results"]) == 3 and data["queries"] == 35
    for row in data["results"].values():
        assert 0 <= row["recall@1"] <= row["recall@5"] <= 1 and row["seconds"] > 0
