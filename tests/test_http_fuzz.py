"""No request a client can send hurts `bertx serve`: a seeded stream of malformed, mistyped, out-of-range and
odd-Unicode requests to every POST route of a real server (an embedder and a cross-encoder in one process),
bounded in count and time. Every answer must be strict JSON (no NaN or Infinity tokens) with a status below
500, and the server must answer a plain request correctly afterwards."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_tasks import make_classifier

import bertx

from reference import MIXED_TEXTS
from servers import Server, start

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

ROUTES = {
    "/v1/embeddings": {"input": ["a text"], "model": None},
    "/v1/rerank": {"query": "q", "documents": ["a", "b"]},
    "/embed": {"inputs": ["a text"]},
    "/": {"inputs": "a text"},
    "/embed_all": {"inputs": ["a text"]},
    "/rerank": {"query": "q", "texts": ["a", "b"]},
    "/predict": {"inputs": ["a", "b"]},
    "/tokenize": {"inputs": "a text"},
    "/decode": {"ids": [101, 102]},
    "/embed/tokens": {"inputs": ["a text"]},
    "/embed/words": {"inputs": [["a", "text"]]},
}
FIELDS = [
    "input", "inputs", "model", "layers", "pooling", "combine", "layer_weights", "pool_before_combine",
    "normalize", "normalize_embeddings", "truncate_dim", "dimensions", "prompt_name", "prompt", "long_texts",
    "chunk_window", "chunk_overlap", "merge", "encoding_format", "truncate", "truncation_direction", "query",
    "texts", "documents", "top_n", "return_documents", "raw_scores", "return_text", "ids", "add_special_tokens",
    "skip_special_tokens", "user", "unknown_field",
]  # fmt: skip
RAW_BODIES = [
    b"",
    b"[",
    b"null",
    b"NaN",
    b'{"input": NaN}',
    b'{"inputs": ["x"], "layer_weights": [Infinity, 1]}',
    b'{"inputs": ["x"], "truncate_dim": 1e999}',
    b'{"inputs": "\\ud800"}',
    b'{"input": "\xff\xfe"}',
    b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    json.dumps({"inputs": ["x"] * 3000}).encode(),
]


def values(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any type, often at an edge."""
    pick = rng.randrange(14 if depth < 2 else 11)
    return [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, -1, 1, 2, 7, 2**31, 2**63, -(2**63), 10**30]),
        lambda: rng.choice([0.5, -0.0, 1e308, -1e308, 5e-324, 3.0]),
        lambda: rng.choice(["", " ", "x", "last4", "2:5", "::0", "-1", "mean", "cls", "weighted", "chunk"]),
        lambda: rng.choice(["\u0000", "\ufeff", "e\u0301", "🏠" * 50, "\u202e\u200b", "東京", "\U0010ffff"]),
        lambda: "word " * rng.choice([300, 3000]),
        lambda: rng.choice(MIXED_TEXTS),
        lambda: rng.choice(["float", "base64", "Left", "Right", "first", "max", "none", "truncate", "error"]),
        lambda: [rng.choice([0, 1, 101, 10**9, -5]) for _ in range(rng.randrange(4))],
        lambda: rng.choice([[], [""], ["a", "b"], [["a", "b"]], [1, 2], [-1, -2], [0.5, float(2**70)]]),
        lambda: [values(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {rng.choice(FIELDS): values(rng, depth + 1)},
        lambda: {"text": values(rng, depth + 1)},
    ][pick]()


TEXTS = [["a text"], ["word " * 3000], MIXED_TEXTS, [], [""], ["\u0000\ufeff"], [["a", "b"]], ["x"] * 3000, "one"]
PLAUSIBLE: dict[str, list[Any]] = {
    "layers": ["last4", "2:5", "::0", "-1", -1, [-4, -3], [0, 99], "all", "9:1", 10**9, "a:b"],
    "pooling": ["mean", "cls", "max", "none", "weighted", ""],
    "combine": ["mean", "concat", "weighted", "sum", "x"],
    "layer_weights": [[1, 2], [0, 0], [1e39, 1], [-1, 1], [0.5] * 7, [], [1] * 3],
    "truncate_dim": [1, 8, 0, -3, 10**6, None],
    "dimensions": [1, 8, 0, -3, 10**6, None],
    "chunk_window": [1, 2, 16, 10**6, 0, -1],
    "chunk_overlap": [0, 1, 15, 16, 10**6, -1],
    "long_texts": ["truncate", "chunk", "error", "x"],
    "prompt_name": ["query", "", "none", "\u0000"],
    "prompt": ["query: ", "", "x" * 10000],
    "merge": ["mean", "first", "last", "max", "x"],
    "encoding_format": ["float", "base64", "x"],
    "truncate": [True, False, None],
    "truncation_direction": ["Left", "right", "up"],
    "top_n": [1, 0, -1, 10**9],
    "ids": [[101, 102], [10**9], [[1], [2, 3]], [], [-1]],
    "inputs": TEXTS,
    "input": TEXTS,
    "texts": TEXTS,
    "documents": [["a", {"text": "b"}], [{"text": 1}], [], ["word " * 3000]],
    "query": ["q", "", "word " * 3000],
    "model": [None, "embed", "cross", "nope", ""],
}


def requests(seed: int, count: int, fields: dict[str, list[str]]) -> Iterator[tuple[str, bytes]]:
    """(route, body): mostly a valid base with one to three fields changed (often to a value of the right type
    at an edge, from the route's own schema), some random objects, some raw bytes."""
    rng = random.Random(seed)
    for _ in range(count):
        route = rng.choice(list(ROUTES))
        roll = rng.random()
        if roll < 0.08:
            yield route, rng.choice(RAW_BODIES)
            continue
        body: Any = dict(ROUTES[route]) if roll < 0.85 else {}
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.6 and fields[route]:
                name = rng.choice(fields[route])
                body[name] = rng.choice(PLAUSIBLE[name]) if name in PLAUSIBLE else values(rng)
            else:
                body[rng.choice(FIELDS)] = values(rng)
        if roll > 0.97:
            body = values(rng)
        yield route, json.dumps(body).encode()


def route_fields(url: str) -> dict[str, list[str]]:
    """Each route's request fields, from the server's own OpenAPI schema (`/` takes /embed's or /predict's)."""
    schema = httpx.get(f"{url}/openapi.json").json()
    found: dict[str, list[str]] = {}
    for route in ROUTES:
        post = schema["paths"].get(route if route != "/" else "/embed", {}).get("post", {})
        ref = post.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        name = ref.get("$ref", "").rsplit("/", 1)[-1]
        found[route] = sorted(schema["components"]["schemas"].get(name, {}).get("properties", {}))
    return found


def strict_json(raw: bytes) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(raw, parse_constant=refuse)


@pytest.fixture(scope="module")
def two_models(
    tiny_artifact: Path, tiny_bert: Path, export_tiny: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    cross = export_tiny(make_classifier(tiny_bert, tmp / "cross", pairs=True, steps=5))
    running = start(Path(f"embed={tiny_artifact}"), tmp, f"cross={cross}", "--read-timeout", "5")
    yield running
    assert running.stop() == 0


def test_no_request_gets_a_5xx_or_a_body_that_is_not_json(two_models: Server, tiny_artifact: Path) -> None:
    deadline = time.monotonic() + 120
    statuses: dict[int, int] = {}
    sent = 0
    with httpx.Client(base_url=two_models.url, timeout=60) as client:
        for route, body in requests(seed=20261207, count=500, fields=route_fields(two_models.url)):
            if time.monotonic() > deadline:
                break
            reply = client.post(route, content=body, headers={"Content-Type": "application/json"})
            sent += 1
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            assert reply.status_code < 500, (route, body[:300], reply.status_code, reply.text[:300])
            assert reply.headers["content-type"].startswith("application/json"), (route, body[:300])
            strict_json(reply.content)
        assert sent >= 200, f"only {sent} requests in the time allowed"
        assert statuses.get(200, 0) >= 50 and sum(n for s, n in statuses.items() if 400 <= s < 500) >= 100, statuses
        after = client.post("/embed", json={"inputs": MIXED_TEXTS})
    model = bertx.Model.from_pretrained(tiny_artifact)
    np.testing.assert_allclose(np.array(after.json()), model.encode(MIXED_TEXTS), atol=1e-6)
