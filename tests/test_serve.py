"""`bertx serve`: a real uvicorn process on 127.0.0.1, spoken to with httpx, checked against PyTorch and
in-process bertx; refusals, a full queue, the API key, metrics and SIGTERM with requests in flight."""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import bertx

from reference import MIXED_TEXTS, cosines, torch_hidden_states, torch_sentence_embeddings
from servers import Server, free_port, start

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TEXTS = MIXED_TEXTS
KEY = "s3cret-key-for-tests"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "key").write_text(KEY + "\n")
    args = ["--api-key-file", str(tmp / "key"), "--max-inputs", "64", "--max-body-mb", "0.05"]
    running = start(tiny_artifact, tmp, *args, "--max-wait-ms", "20", "--max-batch-tokens", "256")
    yield running
    assert running.stop() == 0


def post(server: Server, route: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.url}{route}", json=body, headers=AUTH, timeout=60, **kwargs)  # type: ignore[arg-type]


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.partition(" ")[0].split("{")[0] == name)


def test_openai_embeddings_match_pytorch_and_in_process(server: Server, tiny_artifact: Path, tiny_bert: Path) -> None:
    reply = post(server, "/v1/embeddings", {"input": TEXTS, "model": "anything"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    model = bertx.Model.from_pretrained(tiny_artifact)
    np.testing.assert_allclose(got, model.encode(TEXTS), atol=1e-6)
    defaults = model.manifest.defaults
    want = torch_sentence_embeddings(tiny_bert, TEXTS, 128, defaults.pooling.value, defaults.normalize)
    assert cosines(got, want).min() >= 0.9999
    # usage counts what the tokenizer makes of each text, special tokens included
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_artifact / "tokenizer.json"))
    tokenizer.enable_truncation(model.max_seq_length)
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(TEXTS))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    one = post(server, "/v1/embeddings", {"input": TEXTS[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, got[0])
    # OpenAI's `dimensions` is bertx's truncate_dim: the first N dimensions (normalized after the cut when the
    # model normalizes)
    cut = post(server, "/v1/embeddings", {"input": TEXTS, "dimensions": 3}).json()
    short = np.array([d["embedding"] for d in cut["data"]], dtype=np.float32)
    full = torch_sentence_embeddings(tiny_bert, TEXTS, 128, defaults.pooling.value, False)[:, :3]
    assert short.shape == (len(TEXTS), 3) and cosines(short, full).min() >= 0.9999
    np.testing.assert_allclose(short, model.encode(TEXTS, truncate_dim=3), atol=1e-6)


def test_the_openai_client_gets_the_in_process_vectors(server: Server, tiny_artifact: Path) -> None:
    import openai  # the test extra installs it

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    model = bertx.Model.from_pretrained(tiny_artifact)
    got = client.embeddings.create(model="any-name", input=TEXTS[:4])  # the client asks for base64
    np.testing.assert_allclose([d.embedding for d in got.data], model.encode(TEXTS[:4]), atol=1e-6)
    assert got.usage.prompt_tokens > 0
    cut = client.embeddings.create(model="any-name", input=TEXTS[0], dimensions=8, encoding_format="float")
    np.testing.assert_allclose(cut.data[0].embedding, model.encode(TEXTS[0], truncate_dim=8), atol=1e-6)
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        client.embeddings.create(model="any-name", input=[[101, 2023, 102]])


def test_native_routes_give_any_layer_tokens_and_words(server: Server, tiny_bert: Path) -> None:
    states = torch_hidden_states(tiny_bert, TEXTS[:3], 128)
    reply = post(server, "/embed", {"inputs": TEXTS[:3], "layers": "all", "pooling": "cls", "normalize": False})
    assert reply.status_code == 200, reply.text
    got = np.array(reply.json(), dtype=np.float32)
    want = np.stack([np.mean([s[i][0] for i in range(1, len(s))], axis=0) for s in states])
    np.testing.assert_allclose(got, want, atol=1e-4)

    reply = post(server, "/embed/tokens", {"inputs": TEXTS[:3]})
    for result, theirs in zip(reply.json()["results"], states):
        assert result["tokens"][0] == "[CLS]" and result["special"][0] is True
        np.testing.assert_allclose(np.array(result["vectors"]), theirs[-1], atol=1e-4)

    reply = post(server, "/embed/words", {"inputs": [["New", "York", "city"]], "merge": "first"})
    words = reply.json()["results"][0]
    assert words["words"] == ["New", "York", "city"] and len(words["vectors"]) == 3
    slices = post(server, "/embed", {"inputs": "hi", "layers": "1:3", "combine": "concat", "pooling": "mean"})
    assert slices.status_code == 200 and len(slices.json()[0]) == 2 * len(got[0])


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(server: Server, tiny_artifact: Path) -> None:
    corpus = [f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(96)]
    requests = [corpus[i : i + 1 + i % 5] for i in range(0, 96, 4)]
    rounds_before = metric(server, "bertx_batch_requests_count")
    parts_before = metric(server, "bertx_batch_requests_sum")

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/embeddings", json={"input": r}) for r in requests))

    replies = asyncio.run(all_at_once())
    model = bertx.Model.from_pretrained(tiny_artifact)
    for texts, reply in zip(requests, replies):
        assert reply.status_code == 200, reply.text
        got = np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, model.encode(texts), atol=1e-6)
    rounds = metric(server, "bertx_batch_requests_count") - rounds_before
    parts = metric(server, "bertx_batch_requests_sum") - parts_before
    assert parts == len(requests) and rounds < len(requests)  # several requests shared rounds


def test_equivalent_requests_by_any_route_share_one_model_call(tiny_artifact: Path, tmp_path: Path) -> None:
    # A round waits long enough here for both requests to be in it; they mean the same computation (the
    # artifact's defaults, spelled three ways), so the round makes one model call, not three.
    running = start(tiny_artifact, tmp_path, "--max-wait-ms", "1000")
    try:
        model = bertx.Model.from_pretrained(tiny_artifact)
        defaults = model.manifest.defaults
        bodies = [
            ("/v1/embeddings", {"input": TEXTS[:2]}),
            ("/embed", {"inputs": TEXTS[2:4]}),
            (
                "/embed",
                {
                    "inputs": TEXTS[4:5],
                    "layers": "last",
                    "pooling": defaults.pooling.value,
                    "normalize": defaults.normalize,
                },
            ),
        ]

        async def together() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
                return await asyncio.gather(*(client.post(route, json=body) for route, body in bodies))

        def count(name: str) -> float:
            text = httpx.get(f"{running.url}/metrics", timeout=10).text
            return sum(
                float(line.split()[-1]) for line in text.splitlines() if line.partition(" ")[0].split("{")[0] == name
            )

        calls, rounds = count("bertx_model_calls_total"), count("bertx_batch_requests_count")
        replies = asyncio.run(together())
        assert [r.status_code for r in replies] == [200, 200, 200], [r.text for r in replies]
        assert count("bertx_model_calls_total") - calls == 1
        assert count("bertx_batch_requests_count") - rounds == 1
        got = np.array([d["embedding"] for d in replies[0].json()["data"]] + replies[1].json())
        np.testing.assert_allclose(got, model.encode(TEXTS[:4]), atol=1e-6)
    finally:
        assert running.stop() == 0


def test_a_request_larger_than_a_round_is_split_not_refused(server: Server, tiny_artifact: Path) -> None:
    texts = [" ".join([TEXTS[i % 3]] * 3) for i in range(60)]  # about 40 tokens each, 256 per round
    rounds_before = metric(server, "bertx_batch_requests_count")
    reply = post(server, "/v1/embeddings", {"input": texts})
    assert reply.status_code == 200, reply.text
    got = np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, bertx.Model.from_pretrained(tiny_artifact).encode(texts), atol=1e-6)
    assert metric(server, "bertx_batch_requests_count") - rounds_before >= 5


def test_refusals_are_json_and_the_server_keeps_serving(server: Server) -> None:
    url = server.url

    def raw(body: bytes, content_type: str = "application/json") -> httpx.Response:
        return httpx.post(f"{url}/v1/embeddings", content=body, headers={**AUTH, "content-type": content_type})

    weighted = {"inputs": "x", "combine": "weighted", "layers": [-1, -2], "layer_weights": [1]}
    cases = [
        (raw(b"{not json"), 400),
        (raw(b'{"input": "\\ud800"}'), 400),  # a lone surrogate, as a JSON escape
        (raw(b'{"input": "x"}', "text/plain"), 415),
        (post(server, "/v1/embeddings", {"input": [1, 2]}), 400),
        (post(server, "/v1/embeddings", {"input": []}), 400),
        (post(server, "/v1/embeddings", {"input": "x", "temperature": 1}), 422),
        (post(server, "/v1/embeddings", {"input": "x", "dimensions": 33}), 400),
        (post(server, "/v1/embeddings", {"input": "x", "dimensions": 0}), 400),
        (post(server, "/embed", {"inputs": "x", "layers": "::0"}), 400),
        (post(server, "/embed", {"inputs": "x", "combine": "weighted", "layer_weights": [1e39]}), 400),
        (post(server, "/v1/embeddings", {"input": ["x"] * 65}), 413),
        (post(server, "/v1/embeddings", {"input": ["word " * 2000] * 8}), 413),
        (post(server, "/embed", {"inputs": "x", "layers": 99}), 400),
        (post(server, "/embed", weighted), 400),
        (httpx.post(f"{url}/v1/embeddings", json={"input": "x"}), 401),
        (httpx.post(f"{url}/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong"}), 401),
        (httpx.get(f"{url}/info"), 401),
        (httpx.get(f"{url}/no/such/route", headers=AUTH), 404),
        (httpx.get(f"{url}/v1/embeddings", headers=AUTH), 405),
    ]
    for reply, status in cases:
        assert reply.status_code == status, (status, reply.text)
        body = reply.json()
        if isinstance(body["error"], str):  # text-embeddings-inference's body, on its routes
            assert body["error"] and body["error_type"]
        else:
            assert body["error"]["code"] == status and body["error"]["message"]
        assert KEY not in reply.text
        assert post(server, "/v1/embeddings", {"input": "still here"}).status_code == 200
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # probes need no key
    assert httpx.get(f"{url}/ready").status_code == 200
    info = httpx.get(f"{url}/info", headers=AUTH).json()
    assert info["architecture"]["hidden_size"] > 0 and info["limits"]["max_inputs"] == 64
    assert KEY not in server.log.read_text()
    schema = httpx.get(f"{url}/openapi.json", headers=AUTH).json()
    assert {"/v1/embeddings", "/embed", "/embed/tokens", "/embed/words"} <= set(schema["paths"])
    assert 'bertx_requests_total{route="/v1/embeddings",status="413"}' in httpx.get(f"{url}/metrics", headers=AUTH).text


def test_a_full_queue_answers_503_with_retry_after(tiny_artifact: Path, tmp_path: Path) -> None:
    running = start(tiny_artifact, tmp_path, "--max-batch-tokens", "128", "--max-queue-tokens", "256")
    try:
        texts = [" ".join([TEXTS[0]] * 3)] * 6  # about 200 tokens per request

        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
                return await asyncio.gather(*(client.post("/v1/embeddings", json={"input": texts}) for _ in range(40)))

        replies = asyncio.run(flood())
        statuses = [r.status_code for r in replies]
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        refused = next(r for r in replies if r.status_code == 503)
        assert int(refused.headers["Retry-After"]) >= 1 and "queue is full" in refused.json()["error"]["message"]
        assert httpx.post(f"{running.url}/v1/embeddings", json={"input": "after"}).status_code == 200
    finally:
        assert running.stop() == 0


def test_sigterm_finishes_requests_in_flight_and_exits_0(tiny_artifact: Path, tmp_path: Path) -> None:
    running = start(tiny_artifact, tmp_path, "--max-batch-tokens", "512")
    texts = [f"{' '.join(TEXTS)} {i}" for i in range(200)]

    async def in_flight() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=running.url, timeout=120) as client:
            sent = [asyncio.create_task(client.post("/v1/embeddings", json={"input": texts})) for _ in range(6)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # SIGTERM once the server holds queued work
                text = (await client.get("/metrics")).text
                queued = [line for line in text.splitlines() if line.startswith("bertx_queue_texts{")]
                if queued and float(queued[0].split()[-1]) > 0:
                    break
                await asyncio.sleep(0.01)
            running.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*sent)

    replies = asyncio.run(in_flight())
    assert [r.status_code for r in replies] == [200] * 6
    assert all(len(r.json()["data"]) == len(texts) for r in replies)
    assert running.proc.wait(timeout=60) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{running.url}/health", timeout=2)


def test_without_the_extra_the_error_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertx.errors import MissingDependencyError
    from bertx.serving.server import require_extra

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'bertx\[serve\]'"):
        require_extra()


def test_batcher_splits_and_returns_each_callers_rows() -> None:
    from bertx.serving.batcher import Batcher, BatchSettings

    calls: list[tuple[object, list[int]]] = []

    def run(key: object, items: list[int]) -> list[int]:
        calls.append((key, list(items)))
        return [item * 10 for item in items]

    async def scenario() -> list[list[int]]:
        batcher = Batcher(run, BatchSettings(max_batch_tokens=10, max_wait_ms=5, max_queue_tokens=1000))
        batcher.start()
        jobs = [
            batcher.submit("a", [1, 2, 3], [4, 4, 4]),  # 12 tokens: split in two parts
            batcher.submit("b", [7], [1]),
            batcher.submit("a", [8, 9], [1, 1]),
        ]
        results = await asyncio.gather(*jobs)
        await batcher.close()
        return list(results)

    assert asyncio.run(scenario()) == [[10, 20, 30], [70], [80, 90]]
    cost = {1: 4, 2: 4, 3: 4, 7: 1, 8: 1, 9: 1}
    assert all(sum(cost[i] for i in items) <= 10 for _, items in calls)  # no round over its token budget
    assert sorted(i for _, items in calls for i in items) == [1, 2, 3, 7, 8, 9]
    assert {key for key, _ in calls} == {"a", "b"}


def test_a_missing_artifact_is_one_line_before_anything_listens(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "bertx.cli", "serve", str(tmp_path / "nothing"), "--port", str(free_port())]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr
