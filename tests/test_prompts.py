"""Prompts ("query: ", "passage: "): read from a sentence-transformers folder and the export command, applied
by name in Python, on the command line and over HTTP, against sentence-transformers on the real MiniLM."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bertx
from bertx.errors import OptionError, UnsupportedModelError
from bertx.exporter.onnx_export import _sentence_transformers_prompts
from bertx.prompts import Prompts

from conftest import run_cli
from reference import MIXED_TEXTS
from servers import Server, start

PROMPTS = {"query": "query: ", "passage": "passage: ", "topic": "Represent the topic of this text: "}
TEXTS = [t for t in MIXED_TEXTS if t] + ["A man is eating food.", "The river bank flooded after the storm."]
DOCS = [
    "Mix flour, water and yeast, then let the dough rise for an hour before baking.",
    "The central bank raised interest rates to slow inflation.",
    "Regular exercise strengthens the heart and improves sleep.",
    "A sonnet has fourteen lines and a strict rhyme scheme.",
]


@pytest.fixture(scope="module")
def prompted_source(minilm_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged MiniLM as a sentence-transformers folder that declares prompts, as e5 or bge folders do."""
    folder = tmp_path_factory.mktemp("prompted") / "minilm-prompted"
    folder.mkdir()
    for item in minilm_source.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "config_sentence_transformers.json").unlink()
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": PROMPTS, "default_prompt_name": None}), encoding="utf-8"
    )
    return folder


@pytest.fixture(scope="module")
def prompted(prompted_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported by the command line, which adds one prompt of its own."""
    out = tmp_path_factory.mktemp("prompted-artifact") / "artifact"
    result = run_cli("export", str(prompted_source), "-o", str(out), "--prompt", "title=Title: ", "-q")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def reference(prompted_source: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(prompted_source), device="cpu")
    model.prompts["title"] = "Title: "
    return model


def _rewritten(artifact: Path, tmp: Path, **prompts: Any) -> Path:
    """A copy of `artifact` whose manifest's prompt settings are changed (model files linked, not copied)."""
    copy = tmp / "copy"
    copy.mkdir()
    for item in artifact.iterdir():
        if item.name != "bertx.json":
            (copy / item.name).symlink_to(item)
    manifest = json.loads((artifact / "bertx.json").read_text(encoding="utf-8"))
    manifest["prompts"].update(prompts)
    (copy / "bertx.json").write_text(json.dumps(manifest), encoding="utf-8")
    return copy


@pytest.mark.slow
def test_the_manifest_records_the_folders_prompts_and_the_commands(prompted: Path) -> None:
    prompts = bertx.Manifest.load(prompted).prompts
    assert dict(prompts.named) == {**PROMPTS, "title": "Title: "}
    assert prompts.default_name is None and prompts.include_prompt
    assert prompts.origin == "sentence-transformers config + export command"
    shown = run_cli("info", str(prompted))
    assert shown.returncode == 0 and "query='query: '" in shown.stdout and "no default" in shown.stdout


@pytest.mark.slow
def test_named_query_and_document_prompts_equal_sentence_transformers(prompted: Path, reference: Any) -> None:
    model = bertx.Model.from_pretrained(prompted)
    assert model.prompts == {**PROMPTS, "title": "Title: "}
    pairs = [
        (model.encode_query(TEXTS), reference.encode_query(TEXTS)),
        # This folder declares "passage" and no "document": encode_document takes "passage". (sentence-transformers
        # 5.7 adds an empty "document" prompt to every model, so its encode_document puts nothing before them.)
        (model.encode_document(TEXTS), reference.encode(TEXTS, prompt_name="passage")),
        (model.encode(TEXTS, prompt_name="topic"), reference.encode(TEXTS, prompt_name="topic")),
        (model.encode(TEXTS, prompt_name="title"), reference.encode(TEXTS, prompt_name="title")),
        (model.encode(TEXTS, prompt="Own prefix: "), reference.encode(TEXTS, prompt="Own prefix: ")),
        (model.embed(TEXTS, prompt_name="query"), reference.encode(TEXTS, prompt_name="query")),
        (model.encode(TEXTS), reference.encode(TEXTS)),  # no default prompt: nothing is put before the texts
    ]
    for ours, theirs in pairs:
        assert np.abs(ours - theirs).max() < 1e-5
    # The prompts are real: the vectors move.
    plain, query = model.encode(TEXTS), model.encode_query(TEXTS)
    assert (plain * query).sum(axis=1).min() < 0.98


@pytest.mark.slow
def test_a_default_prompt_and_pooling_without_the_prompts_tokens(
    prompted: Path, reference: Any, tmp_path: Path
) -> None:
    model = bertx.Model.from_pretrained(_rewritten(prompted, tmp_path, default_name="query", include_prompt=False))
    reference.default_prompt_name = "query"
    reference[1].include_prompt = False
    try:
        assert np.abs(model.encode(TEXTS) - reference.encode(TEXTS)).max() < 1e-5
        assert np.abs(model.encode(TEXTS, pooling="max") - _max_pooled(reference, TEXTS, "query: ")).max() < 1e-5
        for name in ("passage", "topic"):
            ours, theirs = model.encode(TEXTS, prompt_name=name), reference.encode(TEXTS, prompt_name=name)
            assert np.abs(ours - theirs).max() < 1e-5
        # prompt="" turns the default off.
        assert np.abs(model.encode(TEXTS, prompt="") - reference.encode(TEXTS, prompt="")).max() < 1e-5
        with pytest.raises(OptionError, match="first window"):
            model.encode(TEXTS, long_texts="chunk")
    finally:
        reference.default_prompt_name = None
        reference[1].include_prompt = True


def _max_pooled(reference: Any, texts: list[str], prompt: str) -> np.ndarray:
    """Max pooling over the text's tokens only, from sentence-transformers' token embeddings."""
    prompted = reference.encode(texts, output_value="token_embeddings", prompt=prompt)
    skip = len(reference.tokenizer(prompt)["input_ids"]) - 1  # [CLS] and the prompt's tokens
    pooled = np.stack([np.asarray(t[skip:]).max(axis=0) for t in prompted])
    return np.asarray(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), dtype=np.float32)


@pytest.mark.slow
def test_wrong_prompt_arguments_are_clear_errors(prompted: Path) -> None:
    model = bertx.Model.from_pretrained(prompted)
    with pytest.raises(OptionError, match="unknown prompt_name 'qeury': this model has prompts 'query'"):
        model.encode(TEXTS, prompt_name="qeury")
    with pytest.raises(OptionError, match="not both"):
        model.encode(TEXTS, prompt_name="query", prompt="x: ")
    with pytest.raises(OptionError, match="pairs"):
        model.encode([("a", "b")], prompt_name="query")
    with pytest.raises(OptionError, match="token vectors"):
        model.encode(TEXTS, pooling="none", prompt_name="query")
    with pytest.raises(bertx.InputError, match="item 1"):
        model.encode(["fine", 3], prompt_name="query")  # type: ignore[list-item]


@pytest.mark.slow
def test_the_command_line_embeds_documents_and_searches_with_the_query_prompt(
    prompted: Path, reference: Any, tmp_path: Path
) -> None:
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    vectors = tmp_path / "docs.npz"
    made = run_cli("embed", str(prompted), "-i", str(corpus), "-o", str(vectors), "--prompt-name", "passage")
    assert made.returncode == 0, made.stderr
    stored = np.load(vectors)
    meta = json.loads(str(stored["meta"]))
    assert (meta["prompt_name"], meta["prompt_text"]) == ("passage", "passage: ")
    documents = reference.encode(DOCS, prompt_name="passage")
    assert np.abs(stored["vectors"] - documents).max() < 1e-5

    query = "How do I make bread at home?"
    found = run_cli("search", str(vectors), query, "-k", "1")
    assert found.returncode == 0, found.stderr
    want = documents @ reference.encode_query([query])[0]
    row = re.search(r"│\s*1\s*│\s*([0-9.]+)\s*│\s*(\d+)\s*│", found.stdout)
    assert row is not None, found.stdout
    # Ids of a text file are its line numbers, from 1.
    assert int(row.group(2)) == int(np.argmax(want)) + 1 and abs(float(row.group(1)) - want.max()) < 1e-4

    refused = run_cli("embed", str(prompted), "a text", "--prompt-name", "nope")
    assert refused.returncode == 2 and "unknown prompt_name 'nope'" in refused.stderr


@pytest.fixture(scope="module")
def server(prompted: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pytest.importorskip("fastapi")
    running = start(prompted, tmp_path_factory.mktemp("prompt-serve"))
    yield running
    assert running.stop() == 0


@pytest.mark.slow
def test_the_server_applies_prompts_by_name_and_counts_their_tokens(server: Server, reference: Any) -> None:
    import httpx

    texts = TEXTS[:5]
    native = httpx.post(f"{server.url}/embed", json={"inputs": texts, "prompt_name": "query"}, timeout=60)
    assert native.status_code == 200, native.text
    assert np.abs(np.array(native.json()) - reference.encode_query(texts)).max() < 1e-5
    openai = httpx.post(f"{server.url}/v1/embeddings", json={"input": texts, "prompt_name": "passage"}, timeout=60)
    assert openai.status_code == 200, openai.text
    body = openai.json()
    got = np.array([item["embedding"] for item in body["data"]])
    assert np.abs(got - reference.encode(texts, prompt_name="passage")).max() < 1e-5
    counted = sum(len(ids) for ids in reference.tokenizer(["passage: " + t for t in texts])["input_ids"])
    assert body["usage"]["prompt_tokens"] == counted
    info = httpx.get(f"{server.url}/info", timeout=10).json()
    assert info["prompts"]["query"] == "query: " and info["default_prompt_name"] is None
    bad = httpx.post(f"{server.url}/embed", json={"inputs": texts, "prompt_name": "nope"}, timeout=60)
    assert bad.status_code == 400 and "unknown prompt_name" in bad.json()["error"]


def test_the_exporter_reads_prompts_and_include_prompt_from_a_folder(tmp_path: Path) -> None:
    assert _sentence_transformers_prompts(tmp_path) == Prompts()
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "q: ", "document": ""}, "default_prompt_name": "query"})
    )
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "include_prompt": False})
    )
    found = _sentence_transformers_prompts(tmp_path)
    assert dict(found.named) == {"query": "q: ", "document": ""} and found.default_name == "query"
    assert not found.include_prompt
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"q": "x"}, "default_prompt_name": "query"})
    )
    with pytest.raises(UnsupportedModelError, match="default prompt 'query' is not one of"):
        _sentence_transformers_prompts(tmp_path)


def test_prompts_resolve_as_sentence_transformers_does() -> None:
    prompts = Prompts({"query": "query: ", "passage": "passage: "}, "query")
    assert prompts.resolve() == "query: "
    assert prompts.resolve("passage") == "passage: "
    assert prompts.resolve(prompt="") == ""
    assert prompts.first_of(("document", "passage", "corpus")) == "passage"
    assert Prompts.from_dict(prompts.to_dict()) == prompts
    assert Prompts.from_dict(None) == Prompts()
    with pytest.raises(OptionError, match="no prompts"):
        Prompts().resolve("query")


def test_export_refuses_a_default_prompt_that_names_none(tiny_bert: Path, tmp_path: Path) -> None:
    result = run_cli(
        "export", str(tiny_bert), "-o", str(tmp_path / "out"), "--prompt", "q=q: ", "--default-prompt-name", "query"
    )
    assert result.returncode == 2 and "names no prompt" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    malformed = run_cli("export", str(tiny_bert), "-o", str(tmp_path / "out"), "--prompt", "no-equals-sign")
    assert malformed.returncode == 2 and "NAME=TEXT" in malformed.stderr
