"""The `bertx` command line, run as a user would: exit codes, one-line errors, files in and out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bertx

from conftest import run_cli as run


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"bertx {bertx.__version__}"


def test_embed_arguments_to_npy_and_jsonl(tiny_artifact: Path, tmp_path: Path) -> None:
    texts = ["the cat", "a dog runs in the park"]
    want = bertx.Model.from_pretrained(tiny_artifact).embed(texts)
    result = run("embed", str(tiny_artifact), *texts, "-o", str(tmp_path / "v.npy"))
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), want, atol=1e-6)
    result = run("embed", str(tiny_artifact), *texts, "-o", str(tmp_path / "v.jsonl"), "--pooling", "cls")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    cls = bertx.Model.from_pretrained(tiny_artifact).embed(texts, pooling="cls")
    assert [r["text"] for r in rows] == texts
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), cls, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_embed_table_on_terminal(tiny_artifact: Path) -> None:
    result = run("embed", str(tiny_artifact), "the cat", "--variant", "int8")
    assert result.returncode == 0, result.stderr
    assert "1 embeddings × 32 (int8)" in result.stdout and "the cat" in result.stdout


def test_embed_file_and_stdin(tiny_artifact: Path, tmp_path: Path) -> None:
    lines = [f"the cat number {i}" for i in range(300)]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines[:150]) + "\n\n" + "\n".join(lines[150:]) + "\n", encoding="utf-8")
    result = run(
        "embed", str(tiny_artifact), "--input", str(source), "-o", str(tmp_path / "out.jsonl"), "--batch-size", "8"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == lines
    assert rows[150]["id"] == "152"
    result = run("embed", str(tiny_artifact), "--input", "-", "-o", "-", stdin="\n".join(lines[:3]).encode())
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == lines[:3]


def test_undecodable_input_names_the_line(tiny_artifact: Path, tmp_path: Path) -> None:
    source = tmp_path / "bad.txt"
    source.write_bytes(b"fine\nalso fine\nbroken \xff\xfe here\n")
    result = run("embed", str(tiny_artifact), "--input", str(source), "-o", str(tmp_path / "o.npy"))
    assert result.returncode == 2
    assert "line 3" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["embed", "{missing}", "hi"], "does not exist"),
        (["embed", "{artifact}", "hi", "--variant", "fp16", "--device", "cuda"], "CUDAExecutionProvider"),
        (["embed", "{artifact}", "--input", "{missing}"], "cannot read input file"),
        (["embed", "{artifact}"], "nothing to embed"),
        (["embed", "{artifact}", "hi", "-o", "{tmp}/out.csv"], "must end in .npy, .npz, .jsonl, .parquet"),
        (["info", "{missing}"], "does not exist"),
        (["export", "bert-base-uncased", "--fp16", "-o", "{tmp}/bb"], "cannot find model 'bert-base-uncased'"),
    ],
)
def test_user_mistakes_are_one_red_line(tiny_artifact: Path, tmp_path: Path, args: list[str], message: str) -> None:
    import onnxruntime

    if "cuda" in args and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    subs = {"missing": str(tmp_path / "missing"), "artifact": str(tiny_artifact), "tmp": str(tmp_path)}
    result = run(*(a.format(**subs) for a in args))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bb").exists() and not (tmp_path / "out.csv").exists()


def test_info_shows_every_variant_and_its_parity(tiny_artifact: Path) -> None:
    result = run("info", str(tiny_artifact))
    assert result.returncode == 0, result.stderr
    for text in ("fp32", "int8", "fp16", "model.int8.onnx", "hidden_states.2", "pass", "min cos"):
        assert text in result.stdout


def test_export_quiet_prints_nothing_and_o3_is_gated(tiny_bert: Path, tmp_path: Path) -> None:
    result = run("export", str(tiny_bert), "-o", str(tmp_path / "a"), "-q", "--int8", "dynamic", "--allow-below-target")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    # The artifact holds exactly its files (an OpenVINO INT8's: tests/test_openvino.py).
    int8 = bertx.Manifest.load(tmp_path / "a").variants[bertx.Precision.INT8]
    expected = {"bertx.json", "model.onnx", "tokenizer.json", int8.file, *int8.extra_files}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(expected)
    result = run("export", str(tiny_bert), "-o", str(tmp_path / "b"), "--max-abs", "1e-12")
    assert result.returncode == 2 and "did not meet the parity thresholds" in " ".join(result.stderr.split())
    assert not (tmp_path / "b").exists()
    result = run("export", str(tiny_bert), "-o", str(tmp_path / "c"), "--optimize", "O3", "--max-abs", "0.5", "-q")
    assert result.returncode == 0, result.stderr
    assert bertx.Manifest.load(tmp_path / "c").variants[bertx.Precision.FP32].optimization["gelu_approximation"]


def test_jsonl_and_csv_inputs_npz_output_and_search(tiny_artifact: Path, tmp_path: Path) -> None:
    docs = ["the cat eats food", "a dog runs in the park", "money in the bank", "the river bank at night"]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"key": f"d{i}", "body": d}) for i, d in enumerate(docs)) + "\n")
    result = run(
        "embed",
        str(tiny_artifact),
        "-i",
        str(jsonl),
        "--field",
        "body",
        "--id-field",
        "key",
        "-o",
        str(tmp_path / "docs.npz"),
        "--layers",
        "last4",
        "--pooling",
        "cls",
    )
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "docs.npz")
    assert list(data["ids"]) == ["d0", "d1", "d2", "d3"] and list(data["texts"]) == docs
    model = bertx.Model.from_pretrained(tiny_artifact)
    want = model.encode(docs, pooling="cls", layers="last4")
    np.testing.assert_allclose(data["vectors"], want, atol=1e-6)

    result = run("search", str(tmp_path / "docs.npz"), docs[2], "-k", "2")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "d" in line and "│" in line]
    assert "d2" in lines[0] and "1.0000" in lines[0]

    csv_file = tmp_path / "docs.csv"
    csv_file.write_text("id,text\n" + "\n".join(f'{i},"{d}"' for i, d in enumerate(docs)) + "\n")
    result = run("embed", str(tiny_artifact), "-i", str(csv_file), "-o", str(tmp_path / "c.npy"), "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    half = np.load(tmp_path / "c.npy")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, model.encode(docs), atol=2e-3)
    result = run("embed", str(tiny_artifact), "-i", str(csv_file), "--column", "body")
    assert result.returncode == 2 and "no column 'body'" in result.stderr


def test_word_vectors_as_jsonl(tiny_artifact: Path, tmp_path: Path) -> None:
    result = run(
        "embed", str(tiny_artifact), "the riverbank cat", "--words", "--merge", "first", "-o", str(tmp_path / "w.jsonl")
    )
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "w.jsonl").read_text())
    want = bertx.Model.from_pretrained(tiny_artifact).encode_words(["the riverbank cat"], merge="first")[0]
    assert row["words"] == list(want.words) == ["the", "riverbank", "cat"]
    np.testing.assert_allclose(np.array(row["vectors"]), want.vectors, atol=1e-6)
    result = run("embed", str(tiny_artifact), "the cat", "--words", "-o", str(tmp_path / "w.npy"))
    assert result.returncode == 2 and ".jsonl" in result.stderr


def test_unwritable_output_is_one_line(tiny_artifact: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("embed", str(tiny_artifact), "the cat", "-o", str(blocker / "sub" / "v.npy"))
    assert result.returncode == 2 and "cannot write" in result.stderr and "Traceback" not in result.stderr


def test_export_errors_are_one_line(tmp_path: Path, tiny_bert: Path) -> None:
    import shutil

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "foo"}')
    result = run("export", str(odd), "-o", str(tmp_path / "o1"))
    assert result.returncode == 2 and "cannot read the model config" in " ".join(result.stderr.split())
    no_tokenizer = tmp_path / "no-tok"
    shutil.copytree(tiny_bert, no_tokenizer)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (no_tokenizer / name).unlink(missing_ok=True)
    result = run("export", str(no_tokenizer), "-o", str(tmp_path / "o2"))
    assert result.returncode == 2 and "tokenizer" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_token_vectors_chunking_and_parquet(tiny_artifact: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    model = bertx.Model.from_pretrained(tiny_artifact)
    result = run("embed", str(tiny_artifact), "the cat runs", "--pooling", "none", "-o", str(tmp_path / "t.jsonl"))
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "t.jsonl").read_text())
    want = model.encode_tokens(["the cat runs"])[0]
    assert row["tokens"] == list(want.tokens) and row["special"][0] is True
    np.testing.assert_allclose(np.array(row["vectors"]), want.vectors, atol=1e-6)

    long_text = "the quick brown fox jumps over the lazy dog " * 40
    result = run("embed", str(tiny_artifact), long_text, "--long-texts", "chunk", "-o", str(tmp_path / "c.npy"))
    assert result.returncode == 0 and "truncated" not in result.stderr, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), model.encode([long_text], long_texts="chunk"), atol=1e-6)
    result = run("embed", str(tiny_artifact), long_text, "-o", str(tmp_path / "t.npy"))
    assert result.returncode == 0 and "1 of 1 texts were longer than 128 tokens" in result.stderr

    result = run("embed", str(tiny_artifact), "a cat", "a dog", "-o", str(tmp_path / "v.parquet"))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column("text").to_pylist() == ["a cat", "a dog"]
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, model.encode(["a cat", "a dog"]), atol=1e-6)
    assert b"bertx" in table.schema.metadata


def test_hidden_states_file_and_similarity_matrix(tiny_artifact: Path, tmp_path: Path) -> None:
    texts = ["the cat", "a dog runs in the park"]
    result = run("embed", str(tiny_artifact), *texts, "--hidden-states", "-o", str(tmp_path / "h.npz"))
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "h.npz")
    want = bertx.Model.from_pretrained(tiny_artifact).hidden_states(texts)
    for i, states in enumerate(want):
        assert data[str(i)].shape == states.shape == (3, len(states[0]), 32)
        np.testing.assert_allclose(data[str(i)], states, atol=1e-6)
    result = run("similarity", str(tiny_artifact), *texts, "--metric", "dot", "--variant", "int8")
    assert result.returncode == 0, result.stderr
    vectors = bertx.Model.from_pretrained(tiny_artifact, variant="int8").encode(texts)
    assert f"{float(vectors[0] @ vectors[1]):.3f}" in result.stdout
    result = run(
        "embed", str(tiny_artifact), "x", "--long-texts", "chunk", "--chunk-window", "1", "-o", str(tmp_path / "x.npy")
    )
    assert result.returncode == 2 and "chunk_window must be" in result.stderr


@pytest.mark.parametrize("columns", ["50", "80"])
def test_help_shows_every_option_name_whole_at_any_width(columns: str) -> None:
    import re
    import subprocess
    import sys

    import typer

    from bertx.cli import app

    group = typer.main.get_command(app)
    checked = 0
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        shown = subprocess.run(
            [sys.executable, "-m", "bertx.cli", name, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            env={"COLUMNS": columns, "PATH": "/usr/bin:/bin"},
        ).stdout
        options = [p for p in command.params if p.param_type_name == "option"]
        checked += len(options)
        for param in options:
            for option in [*param.opts, *param.secondary_opts]:
                whole = re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-]|…)", shown)
                assert option.startswith("-") and whole, (name, option, columns)
    assert checked > 50  # every command's options were read


def test_every_sentence_option_on_the_command_line_matches_pytorch(
    tiny_artifact: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    from reference import MIXED_TEXTS, cosines, torch_hidden_states

    target = tmp_path / "weighted.npy"
    args = ["--layers", "-1,-2", "--combine", "weighted", "--layer-weights", "0.7,0.3", "--pooling", "mean"]
    result = run(
        "embed", str(tiny_artifact), *MIXED_TEXTS, *args, "--pool-before-combine", "--truncate-dim", "16",
        "--normalize-embeddings", "-o", str(target),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = np.load(target)
    want = []
    for states in torch_hidden_states(tiny_bert, MIXED_TEXTS, 128):
        pooled = 0.7 * states[-1].mean(axis=0) + 0.3 * states[-2].mean(axis=0)
        want.append(pooled[:16] / np.linalg.norm(pooled[:16]))
    assert got.shape == (len(MIXED_TEXTS), 16) and cosines(got, np.stack(want)).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
