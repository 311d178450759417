"""text-embeddings-inference's API on `bertx serve`: TEI's own client (huggingface_hub's InferenceClient) gets
vectors equal to in-process bertx, and every TEI route answers in TEI's shapes, checked against PyTorch and the
tokenizer; plus the requests that must not hurt the server (HEAD, OPTIONS, a slow body, token ids, a flood of
characters behind a small body)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_tasks import make_classifier, torch_logits

import bertx
from bertx.manifest import HeadKind

from reference import MIXED_TEXTS, cosines, torch_hidden_states, torch_sentence_embeddings
from servers import Server, start

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

TEXTS = MIXED_TEXTS


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(tiny_artifact, tmp_path_factory.mktemp("tei"), "--read-timeout", "2")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def cross_encoder(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tiny_bert, tmp_path_factory.mktemp("cross") / "model", pairs=True, steps=150)


def post(server: Server, route: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{route}", json=body, timeout=60)


@pytest.fixture
def hub_client_online(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """huggingface_hub refuses every URL in the suite's offline mode, 127.0.0.1 included: lift it for this test."""
    from huggingface_hub import constants
    from huggingface_hub.utils._http import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    yield
    monkeypatch.undo()
    reset_sessions()


def test_tei_client_gets_the_in_process_vectors(server: Server, tiny_artifact: Path, hub_client_online: None) -> None:
    from huggingface_hub import InferenceClient

    model = bertx.Model.from_pretrained(tiny_artifact)
    client = InferenceClient(model=server.url)
    for text in TEXTS[:3]:
        got = client.feature_extraction(text)
        np.testing.assert_allclose(np.asarray(got).reshape(-1), model.encode(text), atol=1e-6)
    embed = InferenceClient(model=f"{server.url}/embed").feature_extraction(TEXTS[0], normalize=True)
    want = model.encode([TEXTS[0]], normalize_embeddings=True)
    np.testing.assert_allclose(np.asarray(embed).reshape(1, -1), want, atol=1e-6)


def test_langchain_tei_embeddings_get_the_in_process_vectors(
    server: Server, tiny_artifact: Path, hub_client_online: None
) -> None:
    from langchain_huggingface import HuggingFaceEndpointEmbeddings  # the test extra installs it

    embeddings = HuggingFaceEndpointEmbeddings(model=server.url)
    model = bertx.Model.from_pretrained(tiny_artifact)
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS[:4]), model.encode(TEXTS[:4]), atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[-1]), model.encode(TEXTS[-1]), atol=1e-6)


def test_tei_routes_answer_in_tei_shapes(server: Server, tiny_artifact: Path, tiny_bert: Path) -> None:
    model = bertx.Model.from_pretrained(tiny_artifact)
    vectors = post(server, "/embed", {"inputs": TEXTS})
    assert vectors.status_code == 200 and isinstance(vectors.json(), list)
    np.testing.assert_allclose(np.array(vectors.json()), model.encode(TEXTS), atol=1e-6)
    cut = post(server, "/embed", {"inputs": TEXTS[:2], "dimensions": 8, "normalize": True, "layers": "last4"})
    np.testing.assert_allclose(
        np.array(cut.json()),
        model.encode(TEXTS[:2], layers="last4", truncate_dim=8, normalize_embeddings=True),
        atol=1e-6,
    )
    every = post(server, "/embed_all", {"inputs": TEXTS[:2]})
    assert every.status_code == 200, every.text
    for got, states in zip(every.json(), torch_hidden_states(tiny_bert, TEXTS[:2], 128)):
        np.testing.assert_allclose(np.array(got), states[-1], atol=1e-4)
    text = "New York city"
    tokens = post(server, "/tokenize", {"inputs": [text], "add_special_tokens": True}).json()[0]
    (encoding,) = model.tokenizer.encode([text])
    assert [t["id"] for t in tokens] == encoding.ids
    for token, (begin, end), special in zip(tokens, encoding.offsets, encoding.special_tokens_mask):
        assert token["special"] == bool(special)
        if not special:
            assert (token["text"], token["start"], token["stop"]) == (text[begin:end], begin, end)
    assert tokens[0]["special"] and tokens[0]["start"] is None
    bare = post(server, "/tokenize", {"inputs": text, "add_special_tokens": False}).json()[0]
    assert [t["id"] for t in bare] == encoding.ids[1:-1]
    ids = [t["id"] for t in tokens]
    assert post(server, "/decode", {"ids": ids}).json() == model.tokenizer.decode([ids])
    assert post(server, "/decode", {"ids": [ids, ids[1:3]]}).json() == model.tokenizer.decode([ids, ids[1:3]])
    info = httpx.get(f"{server.url}/info").json()
    assert info["model_type"] == {"embedding": {"pooling": model.manifest.defaults.pooling.value}}
    assert info["max_input_length"] == model.max_seq_length and info["model_dtype"] == "fp32"


def test_left_truncation_keeps_the_end_as_transformers_does(
    server: Server, tiny_artifact: Path, tiny_bert: Path
) -> None:
    model = bertx.Model.from_pretrained(tiny_artifact)
    long = "the start is here " + " ".join(f"word{i}" for i in range(300)) + " and the end is here"
    texts = [long, TEXTS[0]]
    pooling, normalize = model.manifest.defaults.pooling.value, model.manifest.defaults.normalize
    want = torch_sentence_embeddings(tiny_bert, texts, model.max_seq_length, pooling, normalize, "left")
    with pytest.warns(bertx.TruncationWarning):
        local = model.encode(texts, long_texts="truncate_left")
    np.testing.assert_allclose(local, want, atol=1e-5)
    with pytest.warns(bertx.TruncationWarning):
        assert cosines(local[:1], model.encode([long])).min() < 0.999  # the other end of the text
    served = post(server, "/embed", {"inputs": texts, "truncation_direction": "Left"})
    np.testing.assert_allclose(np.array(served.json()), local, atol=1e-6)
    refused = post(server, "/embed", {"inputs": texts, "truncation_direction": "Left", "truncate": False})
    assert refused.status_code == 413
    with pytest.warns(bertx.TruncationWarning):
        words = model.encode_words([long], long_texts="truncate_left")[0].words
    assert words[-1] == "here" and "start" not in words
    tokens = post(server, "/embed_all", {"inputs": [long], "truncation_direction": "Left"}).json()[0]
    states = torch_hidden_states(tiny_bert, [long], model.max_seq_length, "left")[0][-1]
    np.testing.assert_allclose(np.array(tokens), states, atol=1e-4)


def test_tei_errors_are_tei_bodies(server: Server) -> None:
    long = " ".join(["word"] * 400)
    cases = [
        (post(server, "/embed", {"inputs": [long], "truncate": False}), 413, "send truncate: true"),
        (post(server, "/embed", {"inputs": ["x"], "truncation_direction": "Left", "long_texts": "chunk"}), 400, "Left"),
        (post(server, "/embed", {"inputs": ["x"], "layers": "::0"}), 400, "step 0"),
        (post(server, "/embed", {"inputs": []}), 400, "input is empty"),
        (post(server, "/predict", {"inputs": "x"}), 400, "ForSequenceClassification"),
        (post(server, "/decode", {"ids": [10**9]}), 400, "out of this vocabulary"),
    ]
    for reply, status, words in cases:
        assert reply.status_code == status, (status, reply.text)
        body = reply.json()
        assert isinstance(body["error"], str) and words in body["error"] and body["error_type"], body
    assert post(server, "/embed", {"inputs": [long], "truncate": True}).status_code == 200
    assert post(server, "/embed", {"inputs": [long]}).status_code == 200  # unset: cut, as bertx always has


def test_requests_that_must_not_hurt_the_server(server: Server) -> None:
    assert httpx.head(f"{server.url}/health").status_code == 200
    assert httpx.head(f"{server.url}/ready").status_code == 200
    preflight = httpx.options(
        f"{server.url}/v1/embeddings", headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204 and "POST" in preflight.headers["Allow"]
    ids = post(server, "/v1/embeddings", {"input": [[101, 2023, 102]]})
    assert ids.status_code == 400 and "check_embedding_ctx_length=False" in ids.json()["error"]["message"]
    flood = post(server, "/embed", {"inputs": ["a"] * 8, "prompt": "p" * 1_100_000})  # 1.1 MB asking for 8.8 M
    assert flood.status_code == 413 and "characters" in flood.json()["error"], flood.text
    # A client that sends half a body and stops gets a 408 once the read timeout passes, and the server goes on.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        answer = raw.recv(4096)
        assert b" 408 " in answer.split(b"\r\n", 1)[0] and time.monotonic() - started < 10
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_an_embedder_and_a_cross_encoder_in_one_server(
    cross_encoder: Path, tiny_artifact: Path, export_tiny: Callable[..., Path], tmp_path: Path
) -> None:
    """Rerank and predict equal PyTorch and `Model.rerank`; each request reaches the model it names, or the one
    its route needs; an unknown name is OpenAI's 404; each model has its own metrics labels."""
    artifact = export_tiny(cross_encoder)
    running = start(Path(f"ce={artifact}"), tmp_path, f"tiny={tiny_artifact}")
    try:
        query, texts = "good", ["a bad day with rain", "the good dog is new", "we read a good new book"]
        logits = np.array(
            [
                row[0]
                for row in torch_logits(cross_encoder, [(query, t) for t in texts], HeadKind.SEQUENCE_CLASSIFICATION)
            ]
        )
        scores = 1 / (1 + np.exp(-logits))
        ranked = post(running, "/rerank", {"query": query, "texts": texts, "return_text": True}).json()
        assert [r["index"] for r in ranked] == list(np.argsort(-scores, kind="stable"))
        np.testing.assert_allclose([r["score"] for r in ranked], np.sort(scores)[::-1], atol=1e-5)
        assert ranked[0]["text"] == texts[ranked[0]["index"]]
        raw = post(running, "/rerank", {"query": query, "texts": texts, "raw_scores": True}).json()
        np.testing.assert_allclose(sorted(r["score"] for r in raw), np.sort(logits), atol=1e-5)
        pair = post(running, "/predict", {"inputs": [query, texts[1]]}).json()
        assert pair[0]["score"] == pytest.approx(float(scores[1]), abs=1e-5)
        batch = post(running, "/predict", {"inputs": [[query, t] for t in texts]}).json()
        assert [row[0]["score"] for row in batch] == pytest.approx([float(s) for s in scores], abs=1e-5)
        cross = bertx.Model.from_pretrained(artifact)
        assert [r.index for r in cross.rerank(query, texts)] == [r["index"] for r in ranked]
        cohere = post(
            running,
            "/v1/rerank",
            {"model": "ce", "query": query, "documents": [texts[0], {"text": texts[1]}, texts[2]], "top_n": 2},
        ).json()
        assert [r["index"] for r in cohere["results"]] == [r["index"] for r in ranked[:2]]
        np.testing.assert_allclose(
            [r["relevance_score"] for r in cohere["results"]], np.sort(scores)[::-1][:2], atol=1e-5
        )
        assert (
            cohere["model"] == "ce" and "document" not in cohere["results"][0] and cohere["usage"]["total_tokens"] > 0
        )
        with_text = post(running, "/v1/rerank", {"query": query, "documents": texts, "return_documents": True})
        assert with_text.json()["results"][0]["document"] == {"text": texts[ranked[0]["index"]]}
        long = ["good " * 5 + "bad " * 400, "bad " * 400 + "good " * 5]
        for side in ("right", "left"):
            kept = torch_logits(
                cross_encoder, [(query, t) for t in long], HeadKind.SEQUENCE_CLASSIFICATION, cross.max_seq_length, side
            )
            body = {"query": query, "texts": long, "raw_scores": True, "truncation_direction": side.title()}
            served = sorted(post(running, "/rerank", body).json(), key=lambda r: r["index"])
            np.testing.assert_allclose([r["score"] for r in served], [row[0] for row in kept], atol=1e-5)

        embedder = bertx.Model.from_pretrained(tiny_artifact)
        default = post(running, "/embed", {"inputs": TEXTS[:3]})
        np.testing.assert_allclose(np.array(default.json()), embedder.encode(TEXTS[:3]), atol=1e-6)
        named = post(running, "/v1/embeddings", {"model": "ce", "input": TEXTS[:3]}).json()
        assert named["model"] == "ce"
        np.testing.assert_allclose([d["embedding"] for d in named["data"]], cross.encode(TEXTS[:3]), atol=1e-6)
        unknown = post(running, "/v1/embeddings", {"model": "nope", "input": "x"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found" and "tiny" in unknown.json()["error"]["message"]
        assert post(running, "/rerank", {"model": "nope", "query": "q", "texts": ["a"]}).status_code == 404
        needs_head = post(running, "/predict", {"model": "tiny", "inputs": "a text"})
        assert needs_head.status_code == 400 and "head" in needs_head.json()["error"]
        listed = httpx.get(f"{running.url}/v1/models").json()
        assert sorted(m["id"] for m in listed["data"]) == ["ce", "tiny"]
        assert set(httpx.get(f"{running.url}/info").json()["models"]) == {"ce", "tiny"}
        calls = {
            line.split('"')[1]: float(line.split()[-1])
            for line in httpx.get(f"{running.url}/metrics").text.splitlines()
            if line.startswith("bertx_model_calls_total{")
        }
        assert calls["ce"] >= 6 and calls["tiny"] >= 2, calls  # warm-ups included
    finally:
        assert running.stop() == 0
