"""The one vocabulary of options, held to: every option of `bertx.options` is accepted under its own name by
Python, the command line, HTTP and a Ray job with the same default, and a bad value is refused by each with
the same message. A new option that one front-end lacks, or checks its own way, fails here."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import bertx
from bertx.cli import app
from bertx.errors import BertxError
from bertx.options import CHUNKS, DEFAULTS, SENTENCE, SPECS, TOKENS, WORDS, EncodeOptions

from servers import Server, start

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

NAMES = [spec.name for spec in SPECS]

# A value of the right JSON type that every front-end must refuse, per option (None: no such value exists,
# as for a flag); `also` holds other options that make the case (a prompt beside a prompt name).
BAD: dict[str, tuple[Any, dict[str, Any]] | None] = {
    "pooling": ("bogus", {}),
    "layers": ("::0", {}),
    "combine": ("bogus", {}),
    "layer_weights": ([1e39], {"combine": "weighted"}),
    "pool_before_combine": None,
    "normalize_embeddings": None,
    "long_texts": ("bogus", {}),
    "chunk_overlap": (-1, {}),
    "chunk_window": (0, {}),
    "truncate_dim": (0, {}),
    "prompt_name": ("no-such-prompt", {}),
    "prompt": ("x", {"prompt_name": "query"}),
    "merge": ("bogus", {}),
    "chunk_size": (0, {}),
}
PYTHON: dict[str, Callable[..., Any]] = {
    SENTENCE: bertx.Model.encode,
    TOKENS: bertx.Model.encode_tokens,
    WORDS: bertx.Model.encode_words,
    CHUNKS: bertx.Model.encode_chunks,
}
ROUTES = {SENTENCE: "/embed", TOKENS: "/embed/tokens", WORDS: "/embed/words", CHUNKS: "/embed/chunks"}


def plain(value: Any) -> Any:
    return getattr(value, "value", value)


def same(message: str) -> str:
    """A message with the console's line wrapping undone."""
    return " ".join(message.split())


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(tiny_artifact, tmp_path_factory.mktemp("contract"))
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> bertx.Model:
    return bertx.Model.from_pretrained(tiny_artifact)


def embed_command() -> Any:
    return typer.main.get_command(app).commands["embed"]  # type: ignore[attr-defined]


def cli_param(spec_flag: str) -> Any:
    matches = [p for p in embed_command().params if spec_flag in p.opts]
    return matches[0] if matches else None


def cli_args(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, list):
        return [f"{flag}={','.join(str(v) for v in value)}"]
    return [f"{flag}={value}"]


def test_every_option_is_defined_once_with_help_and_a_default() -> None:
    assert NAMES == list(dict.fromkeys(NAMES))
    assert set(NAMES) == set(DEFAULTS) and set(BAD) == set(NAMES), "a new option needs a row in BAD"
    for spec in SPECS:
        assert spec.help and spec.kinds and spec.wire is not None, spec.name
    assert EncodeOptions() == EncodeOptions.from_mapping({}) and hash(EncodeOptions()) == hash(EncodeOptions())


@pytest.mark.parametrize("name", NAMES)
def test_every_front_end_takes_the_option_by_its_name_with_the_same_default(name: str) -> None:
    from bertx.serving.schemas import ChunksRequest, EmbedRequest, TokensRequest, WordsRequest

    requests = {SENTENCE: EmbedRequest, TOKENS: TokensRequest, WORDS: WordsRequest, CHUNKS: ChunksRequest}
    spec = next(s for s in SPECS if s.name == name)
    default = plain(DEFAULTS[name])
    for kind in spec.kinds:
        parameter = inspect.signature(PYTHON[kind]).parameters.get(name)
        assert parameter is not None, f"Python {PYTHON[kind].__name__} lacks {name}"
        assert plain(parameter.default) == default, (kind, name)
        field = requests[kind].model_fields.get(name)
        assert field is not None, f"HTTP {ROUTES[kind]} lacks {name}"
        assert plain(field.default) == default, (kind, name)
    param = cli_param(spec.flag)
    assert param is not None, f"bertx embed lacks {spec.flag}"
    assert param.default == default, name
    if SENTENCE in spec.kinds:
        from bertx.distributed.job import CorpusJob, encode_options

        assert encode_options({name: default}) == EncodeOptions()  # a job takes it, and it means the default
        assert CorpusJob(artifact="a", output="o", options={name: default}).options == {name: default}


@pytest.mark.parametrize("name", [name for name in NAMES if BAD[name] is not None])
def test_a_bad_value_gets_the_same_message_everywhere(
    name: str, model: bertx.Model, server: Server, tiny_artifact: Path
) -> None:
    bad = BAD[name]
    assert bad is not None
    value, also = bad
    spec = next(s for s in SPECS if s.name == name)
    kind = SENTENCE if SENTENCE in spec.kinds else spec.kinds[0]
    given = {**also, name: value}
    messages: dict[str, str] = {}

    method = {
        SENTENCE: model.encode,
        TOKENS: model.encode_tokens,
        WORDS: model.encode_words,
        CHUNKS: model.encode_chunks,
    }[kind]
    with pytest.raises(BertxError) as python:
        method(["a text"], **given)
    messages["python"] = same(str(python.value))

    args = ["embed", str(tiny_artifact), "a text", *{WORDS: ["--words"], CHUNKS: ["--chunks"]}.get(kind, [])]
    for key, item in given.items():
        args += cli_args(key, item)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    shown = re.sub(r"^.*?error:\s*", "", same(result.stderr if hasattr(result, "stderr") else result.output))
    messages["cli"] = shown

    body = {"inputs": ["a text"], **given}
    reply = httpx.post(f"{server.url}{ROUTES[kind]}", json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]  # text-embeddings-inference's body on /embed, OpenAI's on bertx's own routes
    messages["http"] = same(error if isinstance(error, str) else error["message"])

    if kind == SENTENCE:
        from bertx.distributed.job import CorpusJob, _check

        job = CorpusJob(artifact=str(tiny_artifact), output="unused", options=given)
        with pytest.raises(BertxError) as ray_job:
            _check(job, 1, None)
        messages["ray"] = same(str(ray_job.value))
    assert len(set(messages.values())) == 1, messages
