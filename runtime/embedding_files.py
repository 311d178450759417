"""Writing embeddings to .npy, .npz, .jsonl or .parquet atomically, and reading .npz back for search.

An .npz holds `vectors`, `ids`, `texts` and `meta` (JSON: the artifact and the settings that made the
vectors), so `bertx search` can embed a query the same way. Quantized vectors (meta "precision" int8, uint8,
binary or ubinary) come with `ranges` (int8/uint8 calibration, to quantize queries alike) and, when kept,
`float_vectors` for rescoring.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import InputFileError, MissingDependencyError
from .inputs import Record
from .late_chunking import ChunkEmbeddings
from .outputs import TokenEmbeddings, WordEmbeddings

VECTOR_FORMATS = (".npy", ".npz", ".jsonl", ".parquet")


@dataclass(frozen=True)
class EmbeddingsFile:
    """The contents of an .npz written by `bertx embed`."""

    vectors: np.ndarray
    ids: list[str]
    texts: list[str]
    meta: dict[str, Any]
    ranges: np.ndarray | None = None
    float_vectors: np.ndarray | None = None

    @property
    def precision(self) -> str:
        """How `vectors` are stored: float32 (also for float16 files), int8, uint8, binary or ubinary."""
        return str(self.meta.get("precision", "float32"))


def check_output(path: str | None, words: bool, precision: str = "float32") -> None:
    """Refuse an output path bertx cannot write, before any work is done."""
    if precision != "float32":
        suffix = "" if path is None or path == "-" else Path(path).suffix.lower()
        if suffix != ".npz" and not (suffix == ".npy" and precision in ("binary", "ubinary")):
            raise InputFileError(
                f"{precision} vectors need --output FILE.npz (it keeps their ranges; binary may be .npy), got {path}"
            )
    if words and (path is None or (path != "-" and Path(path).suffix.lower() != ".jsonl")):
        raise InputFileError(
            f"word embeddings are written as JSON lines: --output must end in .jsonl or be -, got {path}"
        )
    if path is None or path == "-":
        return
    if Path(path).suffix.lower() not in VECTOR_FORMATS:
        raise InputFileError(f"--output must end in {', '.join(VECTOR_FORMATS)} (or be - for stdout), got {path}")
    if Path(path).is_dir():
        raise InputFileError(f"--output {path} is a folder; give a file name")


def write_vectors(
    path: str,
    vectors: np.ndarray,
    records: Sequence[Record],
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Write one vector per record; "-" writes JSON lines to standard output.

    `arrays` (an .npz only) are stored beside the vectors: `ranges`, `float_vectors`.
    """
    if path == "-":
        _jsonl_vectors(sys.stdout, vectors, records)
        return
    check_output(path, words=False)
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        _write_parquet(path, vectors, records, meta)
        return
    with atomic_write(path, binary=suffix != ".jsonl") as out:
        if suffix == ".npy":
            np.save(out, vectors)
        elif suffix == ".npz":
            contents: dict[str, Any] = {
                "vectors": vectors,
                "ids": np.array([r.id for r in records], dtype=str),
                "texts": np.array([r.text for r in records], dtype=str),
                "meta": np.array(json.dumps(meta)),
                **(arrays or {}),
            }
            np.savez(out, **contents)
        else:
            _jsonl_vectors(out, vectors, records)


def write_words(path: str, words: Sequence[WordEmbeddings], records: Sequence[Record], dtype: str) -> None:
    """Write word vectors as JSON lines, one object per text (words, spans, vectors)."""
    items = ({"words": list(r.words), "spans": [list(span) for span in r.spans], "vectors": r.vectors} for r in words)
    _write_per_text(path, items, records, dtype)


def write_chunks(path: str, chunks: Sequence[ChunkEmbeddings], records: Sequence[Record], dtype: str) -> None:
    """Write late chunks as JSON lines, one object per text (chunks, spans, vectors)."""
    items = (
        {"chunks": list(r.chunks), "spans": [list(span) for span in r.spans], "vectors": r.vectors} for r in chunks
    )
    _write_per_text(path, items, records, dtype)


def write_tokens(path: str, tokens: Sequence[TokenEmbeddings], records: Sequence[Record], dtype: str) -> None:
    """Write token vectors as JSON lines, one object per text (tokens, offsets, special, vectors)."""
    items = (
        {
            "tokens": list(r.tokens),
            "offsets": [list(o) for o in r.offsets],
            "special": [bool(x) for x in r.special],
            "vectors": r.vectors,
        }
        for r in tokens
    )
    _write_per_text(path, items, records, dtype)


def _write_per_text(path: str, items: Iterator[dict[str, Any]], records: Sequence[Record], dtype: str) -> None:
    check_output(path, words=True)

    def emit(out: IO[Any]) -> None:
        for record, item in zip(records, items):
            item["vectors"] = [_floats(v) for v in item["vectors"].astype(dtype)]
            out.write(json.dumps({"id": record.id, "text": record.text, **item}, ensure_ascii=False) + "\n")

    if path == "-":
        emit(sys.stdout)
        return
    with atomic_write(path, binary=False) as out:
        emit(out)


def write_hidden_states(path: str, states: Sequence[np.ndarray], records: Sequence[Record]) -> None:
    """Write every hidden state per text to an .npz: arrays "0", "1", … of (layers + 1, tokens, hidden)."""
    arrays: dict[str, Any] = {str(i): array for i, array in enumerate(states)}
    arrays["ids"] = np.array([r.id for r in records], dtype=str)
    with atomic_write(path, binary=True) as out:
        np.savez(out, **arrays)


def read_npz(path: str) -> EmbeddingsFile:
    """Read an .npz written by `bertx embed`; raise `InputFileError` if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return EmbeddingsFile(
                vectors=np.asarray(data["vectors"]),
                ids=[str(i) for i in data["ids"]],
                texts=[str(t) for t in data["texts"]],
                meta=json.loads(str(data["meta"])),
                ranges=np.asarray(data["ranges"]) if "ranges" in data.files else None,
                float_vectors=np.asarray(data["float_vectors"]) if "float_vectors" in data.files else None,
            )
    except (OSError, KeyError, ValueError) as exc:
        raise InputFileError(
            f"{path} is not an embeddings file written by `bertx embed --output X.npz` ({exc})"
        ) from exc


def _floats(vector: np.ndarray) -> list[float]:
    return [round(float(x), 7) for x in vector]


def _jsonl_vectors(out: IO[Any], vectors: np.ndarray, records: Sequence[Record]) -> None:
    for record, vector in zip(records, vectors):
        out.write(json.dumps({"id": record.id, "text": record.text, "embedding": _floats(vector)}, ensure_ascii=False))
        out.write("\n")


def _write_parquet(path: str, vectors: np.ndarray, records: Sequence[Record], meta: dict[str, Any]) -> None:
    columns = {"id": [r.id for r in records], "text": [r.text for r in records]}
    write_parquet(path, columns, vectors, meta)


def write_parquet(
    path: str | os.PathLike[str], columns: dict[str, Any], vectors: np.ndarray, meta: dict[str, Any]
) -> None:
    """Write `columns` and the vectors (an `embedding` column of fixed-size lists) as Parquet, with `meta` as
    JSON under the file metadata key "bertx", atomically."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("writing .parquet needs pyarrow: pip install pyarrow") from None
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.table({**columns, "embedding": embedding}).replace_schema_metadata({"bertx": json.dumps(meta)})
    with atomic_write(path, binary=True) as out:
        pq.write_table(table, out)


@contextmanager
def atomic_write(path: str | os.PathLike[str], binary: bool) -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path` and rename it into place only when writing succeeded; a
    failure or Ctrl-C leaves `path` as it was. The file gets the usual permissions (the umask's), not
    mkstemp's private 0600: vectors and tables are meant to be shared.

    Raises:
        InputFileError: the folder or the file cannot be written.
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = tmp.open("xb") if binary else tmp.open("x", encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with out:
            yield out
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
