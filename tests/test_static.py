"""Static word-vector tables (`bertx vocab`, `bertx.StaticEmbeddings`) on the tiny random BERT.

Every number is checked against an independent computation: piece and word vectors against plain
onnxruntime on hand-built token ids, text vectors against the mean of the file's arrays taken here,
with the words split by the `tokenizers` library directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from typer.testing import CliRunner

import bertx
from bertx.cli import app
from bertx.errors import InputError, InputFileError, OptionError
from bertx.static_build import build_table

from conftest import make_tiny_model

# "riverbank", "parks" and "quickest" are not whole entries of the tiny vocabulary: they split into pieces.
WORDS = ["riverbank", "Riverbank", "", "  ", "unaffordable", "cat", "don't", "quickest", "☃"]
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "Money at the RIVERBANK, parks and quickest cats!",
    "don't walk ☃ in the rain",
    "é ü 42 ?",
]


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> bertx.Model:
    return bertx.Model.from_pretrained(tiny_artifact, threads=1)


@pytest.fixture(scope="module")
def table_file(model: bertx.Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("static") / "table.npz"
    build_table(model, WORDS, batch_size=7).save(path)  # 7: many batches, the last one partial
    return path


@pytest.fixture(scope="module")
def arrays(table_file: Path) -> dict[str, np.ndarray]:
    with np.load(table_file, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def ort_states(artifact: Path, ids: list[int], layers: list[int]) -> list[np.ndarray]:
    """Hidden states of one hand-built sequence from a plain onnxruntime session: (tokens, dim) per layer."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    row = np.array([ids], dtype=np.int64)
    feeds = {"input_ids": row, "attention_mask": np.ones_like(row), "token_type_ids": np.zeros_like(row)}
    feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
    return [s[0] for s in session.run([f"hidden_states.{i}" for i in layers], feeds)]


def raw_tokenizer(artifact: Path) -> Tokenizer:
    return Tokenizer.from_file(str(artifact / "tokenizer.json"))


def by_hand(arrays: dict[str, np.ndarray], text: str) -> np.ndarray:
    """A text's vector from the file's arrays: the mean over its words of the stored word vector, or
    else the mean of the word's piece vectors (special tokens have none)."""
    tokenizer = Tokenizer.from_str(str(arrays["tokenizer"]))
    special = set(tokenizer.get_added_tokens_decoder())
    stored = {str(w): i for i, w in enumerate(arrays["words"])}
    normalized = text if tokenizer.normalizer is None else tokenizer.normalizer.normalize_str(text)
    rows = []
    for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized):
        if word in stored:
            rows.append(arrays["word_vectors"][stored[word]].astype(np.float64))
            continue
        ids = [t.id for t in tokenizer.model.tokenize(word) if t.id not in special]
        if ids:
            rows.append(arrays["piece_vectors"][ids].astype(np.float64).mean(axis=0))
    return np.mean(rows, axis=0) if rows else np.zeros(arrays["piece_vectors"].shape[1])


def test_piece_vectors_are_each_entry_alone_in_plain_onnxruntime(
    tiny_artifact: Path, arrays: dict[str, np.ndarray]
) -> None:
    tokenizer = raw_tokenizer(tiny_artifact)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    pieces = arrays["piece_vectors"]
    assert pieces.dtype == np.float32 and pieces.shape == (tokenizer.get_vocab_size(), 32)
    for token in ("cat", "river", "##s", ".", "a", "é", "world"):
        piece = tokenizer.token_to_id(token)
        (last,) = ort_states(tiny_artifact, [cls, piece, sep], [2])
        np.testing.assert_allclose(pieces[piece], last[1], atol=1e-5, err_msg=token)
    for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert not pieces[tokenizer.token_to_id(token)].any(), f"{token} has a vector"


def test_layers_are_combined_as_the_runtime_does(model: bertx.Model, tiny_artifact: Path) -> None:
    table = build_table(model, ["riverbank"], layers=[0, -1], combine="weighted", layer_weights=[0.25, 0.75])
    tokenizer = raw_tokenizer(tiny_artifact)
    cls, sep, dog = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "dog"))
    first, last = ort_states(tiny_artifact, [cls, dog, sep], [0, 2])
    np.testing.assert_allclose(table.word_vector("dog"), 0.25 * first[1] + 0.75 * last[1], atol=1e-5)
    pieces = [cls, *tokenizer.encode("riverbank", add_special_tokens=False).ids, sep]
    first, last = ort_states(tiny_artifact, pieces, [0, 2])
    want = (0.25 * first[1:-1] + 0.75 * last[1:-1]).mean(axis=0)
    np.testing.assert_allclose(table.word_vector("riverbank"), want, atol=1e-5)
    assert table.info.layers == (0, 2) and table.info.layer_weights == (0.25, 0.75)


def test_listed_words_split_into_pieces_get_their_own_vector(
    tiny_artifact: Path, table_file: Path, arrays: dict[str, np.ndarray]
) -> None:
    # One entry per normalized form; words the vocabulary holds whole ("cat"), [UNK] alone and blanks are not stored.
    assert [str(w) for w in arrays["words"]] == ["riverbank", "unaffordable", "don't", "quickest"]
    tokenizer = raw_tokenizer(tiny_artifact)
    table = bertx.StaticEmbeddings.load(table_file)
    for word in ("riverbank", "unaffordable", "quickest"):
        ids = tokenizer.encode(word).ids
        assert len(ids) > 3, word
        (last,) = ort_states(tiny_artifact, ids, [2])
        np.testing.assert_allclose(table.word_vector(word), last[1:-1].mean(axis=0), atol=1e-5, err_msg=word)
    # "don't" is three words to the tokenizer: stored as the mean of them, as Model.word_embedding does.
    encoding = tokenizer.encode("don't")
    (last,) = ort_states(tiny_artifact, encoding.ids, [2])
    word_ids = np.array([-1 if w is None else w for w in encoding.word_ids])
    assert list(word_ids) == [-1, 0, 0, 0, 1, 2, -1]  # d ##o ##n ' t
    want = np.mean([last[word_ids == w].mean(axis=0) for w in range(3)], axis=0)
    np.testing.assert_allclose(table.word_vector("don't"), want, atol=1e-5)
    np.testing.assert_allclose(table.word_vector("Riverbank"), table.word_vector("riverbank"))


def test_merge_max_matches_word_embedding(model: bertx.Model) -> None:
    table = build_table(model, ["riverbank"], merge="max")
    np.testing.assert_allclose(
        table.word_vector("riverbank"), model.word_embedding("riverbank", merge="max"), atol=1e-5
    )
    assert table.info.merge == "max"


def test_encode_is_the_mean_of_looked_up_word_vectors(table_file: Path, arrays: dict[str, np.ndarray]) -> None:
    table = bertx.StaticEmbeddings.load(table_file)
    raw = table.encode(TEXTS, normalize=False)
    want = np.stack([by_hand(arrays, text) for text in TEXTS])
    assert raw.dtype == np.float32 and raw.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(raw, want, atol=1e-6)
    unit = table.encode(TEXTS)
    np.testing.assert_allclose(unit, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(table.encode(TEXTS[::-1]), unit[::-1])  # a text's vector does not depend on the batch


def test_unknown_words_fall_back_to_their_pieces(
    tiny_artifact: Path, table_file: Path, arrays: dict[str, np.ndarray]
) -> None:
    table = bertx.StaticEmbeddings.load(table_file)
    tokenizer = raw_tokenizer(tiny_artifact)
    ids = tokenizer.encode("parks", add_special_tokens=False).ids
    assert len(ids) == 2
    np.testing.assert_allclose(table.word_vector("Parks"), arrays["piece_vectors"][ids].mean(axis=0), atol=1e-6)
    assert "parks" not in table and "park" in table and "PARK" in table and "riverbank" in table
    assert "##s" not in table and "[CLS]" not in table and 3 not in table
    assert "park" in table.words and "riverbank" in table.words and "##s" not in table.words
    assert table.stored_words == ("riverbank", "unaffordable", "don't", "quickest")
    assert len(table) == len(table.words) and table.dim == 32 and table.pieces == tokenizer.get_vocab_size()


def test_texts_without_words_get_zero_vectors(table_file: Path) -> None:
    table = bertx.StaticEmbeddings.load(table_file)
    out = table.encode(["", "   \t\n", "☃", "\u200b", "the cat"])
    assert np.isfinite(out).all()
    assert not out[:4].any() and abs(np.linalg.norm(out[4]) - 1) < 1e-6
    assert table.encode([]).shape == (0, 32)


def test_bad_input_is_an_input_error_naming_the_item(table_file: Path, model: bertx.Model) -> None:
    table = bertx.StaticEmbeddings.load(table_file)
    with pytest.raises(InputError, match="item 1 is int"):
        table.encode(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="item 0 is not valid Unicode"):
        table.encode(["\ud800"])
    with pytest.raises(InputError, match="list of strings"):
        table.encode("one text")
    with pytest.raises(InputError, match="non-empty"):
        table.word_vector("  ")
    with pytest.raises(InputError, match=r"\[UNK\]"):
        table.word_vector("☃")
    with pytest.raises(InputError, match="item 1 is NoneType"):
        build_table(model, ["ok", None])  # type: ignore[list-item]
    with pytest.raises(InputError, match="not one str"):
        build_table(model, "riverbank")


@pytest.mark.parametrize(
    "options,message",
    [
        ({"merge": "avg"}, "unknown merge 'avg'"),
        ({"layers": 7}, "layer 7 is out of range"),
        ({"combine": "weighted"}, "needs 1 layer_weights"),
        ({"dtype": "int8"}, "unknown dtype 'int8'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_invalid_options_are_option_errors(model: bertx.Model, options: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        build_table(model, **options)  # type: ignore[arg-type]


def test_float16_table(model: bertx.Model, tmp_path: Path, table_file: Path) -> None:
    build_table(model, WORDS, dtype="float16").save(tmp_path / "half.npz")
    with np.load(tmp_path / "half.npz", allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    assert arrays["piece_vectors"].dtype == np.float16 and arrays["word_vectors"].dtype == np.float16
    half = bertx.StaticEmbeddings.load(tmp_path / "half.npz")
    assert half.info.dtype == "float16"
    want = np.stack([by_hand(arrays, text) for text in TEXTS])
    np.testing.assert_allclose(half.encode(TEXTS, normalize=False), want, atol=1e-5)
    full = bertx.StaticEmbeddings.load(table_file).encode(TEXTS)
    assert (half.encode(TEXTS) * full).sum(axis=1).min() > 0.9999


def test_bad_files_are_one_clear_error(tmp_path: Path, table_file: Path) -> None:
    with pytest.raises(InputFileError, match=r"does not exist.*bertx vocab"):
        bertx.StaticEmbeddings.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(InputFileError, match="not a usable bertx static table"):
        bertx.StaticEmbeddings.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "embeddings.npz", vectors=np.zeros((2, 3)), meta=np.array("{}"))
    with pytest.raises(InputFileError, match="lacks piece_vectors, words, word_vectors, tokenizer"):
        bertx.StaticEmbeddings.load(tmp_path / "embeddings.npz")
    np.save(tmp_path / "vectors.npy", np.zeros((2, 3)))
    with pytest.raises(InputFileError, match=r"single \.npy array"):
        bertx.StaticEmbeddings.load(tmp_path / "vectors.npy")
    whole = table_file.read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputFileError, match="not a usable bertx static table"):
        bertx.StaticEmbeddings.load(tmp_path / "cut.npz")
    with np.load(table_file, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    variants = {
        "foreign": {**arrays, "meta": np.array(json.dumps({**meta, "format": "other"}))},
        "future": {**arrays, "meta": np.array(json.dumps({**meta, "schema_version": 99}))},
        "short": {**arrays, "piece_vectors": arrays["piece_vectors"][:-1]},
        "pickled": {**arrays, "words": np.array([object()] * len(arrays["words"]), dtype=object)},
        "tokenizer": {**arrays, "tokenizer": np.array("{not json")},
        "mixed": {**arrays, "word_vectors": arrays["word_vectors"].astype(np.float16)},
    }
    messages = {
        "foreign": "format 'bertx.static'",
        "future": "schema version 99.*upgrade bertx",
        "short": "piece vectors but the tokenizer has",
        "pickled": "not a usable",
        "tokenizer": "its tokenizer cannot be read",
        "mixed": "float32 / float16 but the table says float32",
    }
    for name, content in variants.items():
        np.savez(tmp_path / f"{name}.npz", **content)
        with pytest.raises(InputFileError, match=messages[name]):
            bertx.StaticEmbeddings.load(tmp_path / f"{name}.npz")


def test_save_is_atomic(table_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = bertx.StaticEmbeddings.load(table_file)
    target = tmp_path / "out" / "table.npz"
    table.save(target)
    before = target.read_bytes()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        table.save(target)
    with pytest.raises(KeyboardInterrupt):
        table.save(tmp_path / "out" / "new.npz")
    assert target.read_bytes() == before and sorted(p.name for p in target.parent.iterdir()) == ["table.npz"]
    monkeypatch.undo()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputFileError, match="cannot write"):
        table.save(tmp_path / "file" / "table.npz")


def test_no_inference_session_is_made(table_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("an inference session was created")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refused)
    table = bertx.StaticEmbeddings.from_file(table_file)
    assert table.encode(TEXTS).shape == (len(TEXTS), 32)
    assert table.word_vector("riverbank").shape == (32,) and len(table.words) > 0


runner = CliRunner()


def test_cli_writes_a_table_and_replaces_it(tiny_artifact: Path, tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    target = tmp_path / "table.npz"
    result = runner.invoke(
        app, ["vocab", str(tiny_artifact), "-o", str(target), "--word-file", str(words), "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "pieces" in result.output and "4 words" in result.output and "dim 32" in result.output
    table = bertx.StaticEmbeddings.load(target)
    assert table.stored_words == ("riverbank", "unaffordable", "don't", "quickest")
    np.testing.assert_allclose(table.encode(TEXTS, normalize=False), [by_hand(arrays, t) for t in TEXTS], atol=1e-6)
    assert table.info.artifact == str(tiny_artifact.resolve()) and table.info.variant == "fp32"
    # A second run replaces the file, as `bertx embed -o` does: written beside it, renamed into place.
    result = runner.invoke(app, ["vocab", str(tiny_artifact), "-o", str(target), "--dtype", "float16", "-q"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    again = bertx.StaticEmbeddings.load(target)
    assert again.stored_words == () and again.info.dtype == "float16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.npz", "words.txt"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["-o", "table.txt"], "--output must be a file ending in .npz"),
        (["-o", "t.npz", "--word-file", "w.txt", "--vocabulary"], "give one of them"),
        (["-o", "t.npz", "--layers", "9"], "layer 9 is out of range"),
        (["-o", "t.npz", "--word-file", "missing.txt"], "cannot read input file missing.txt"),
        (["-o", "t.npz", "--variant", "bf16"], "bf16"),
    ],
)
def test_cli_user_mistakes_are_one_line(
    tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.txt").write_text("riverbank\n", encoding="utf-8")
    result = runner.invoke(app, ["vocab", str(tiny_artifact), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("*.npz"))


def test_building_and_using_a_table_loads_nothing_heavy(tiny_artifact: Path, tmp_path: Path) -> None:
    code = (
        "import sys, bertx\n"
        "from bertx.cli import app\n"
        f"try:\n    app(['vocab', {str(tiny_artifact)!r}, '-o', {str(tmp_path / 't.npz')!r}, '-q'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        f"assert bertx.StaticEmbeddings.load({str(tmp_path / 't.npz')!r}).encode(['the cat']).shape == (1, 32)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'optimum', 'onnx') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_roberta_byte_level_tokenizer(tmp_path: Path, export_tiny: Callable[..., Path]) -> None:
    artifact = export_tiny(make_tiny_model(tmp_path / "roberta", "roberta"))
    build_table(bertx.Model.from_pretrained(artifact, threads=1), ["riverbank walking"]).save(tmp_path / "t.npz")
    tokenizer = raw_tokenizer(artifact)
    first, last = tokenizer.encode("", add_special_tokens=True).ids
    assert (tokenizer.id_to_token(first), tokenizer.id_to_token(last)) == ("<s>", "</s>")
    piece = tokenizer.encode("a the", add_special_tokens=False).ids[-1]
    assert tokenizer.id_to_token(piece) == "Ġthe"  # a word after a space carries the byte-level space
    (states,) = ort_states(artifact, [first, piece, last], [2])
    with np.load(tmp_path / "t.npz", allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    np.testing.assert_allclose(arrays["piece_vectors"][piece], states[1], atol=1e-5)
    texts = ["the cat and the dog", "the riverbank walking", "a riverbank walking", ""]
    out = bertx.StaticEmbeddings.load(tmp_path / "t.npz").encode(texts, normalize=False)
    np.testing.assert_allclose(out, [by_hand(arrays, text) for text in texts], atol=1e-6)
    assert np.isfinite(out).all() and out[1].any() and not out[3].any()
