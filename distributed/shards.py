"""A corpus cut into shards: planned once from the input files, read by row range, written atomically.

A shard is a fixed range of one input file (rows of a Parquet file, byte range of a JSONL file). Its
output, `part-NNNNN.parquet`, is written to a temporary name and renamed into place only when complete,
so a part file that exists is a finished shard and a job run again skips it.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertx.embedding_files import write_parquet
from bertx.errors import InputFileError
from bertx.late_chunking import ChunkEmbeddings

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
PART = "part-{:05d}.parquet"


@dataclass(frozen=True)
class Shard:
    """Rows `start` … `stop` of a Parquet file, or bytes `start` … `stop` (whole lines) of a JSONL file.

    `first_line` is the number (from 1) of the shard's first row or line in its file, and `label` names the
    file in the ids made from those numbers when the job has no id column ("" when the job reads one file).
    """

    index: int
    file: str
    format: str
    start: int
    stop: int
    rows: int
    first_line: int = 1
    label: str = ""

    @property
    def part(self) -> str:
        return PART.format(self.index)


@dataclass(frozen=True)
class InputFile:
    """An input file as it was when the job was planned (a changed file makes the plan stale)."""

    path: str
    size: int
    mtime_ns: int


def input_files(spec: str | Sequence[str]) -> list[Path]:
    """The Parquet and JSONL files a folder, glob or list names, sorted.

    Raises:
        InputFileError: nothing matched, or a file has another format.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    found: list[Path] = []
    for item in specs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in FORMATS and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            found += sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
    if not found:
        raise InputFileError(f"no input files in {', '.join(map(str, specs))}: give a folder, a glob or files")
    others = [p for p in found if p.suffix.lower() not in FORMATS]
    if others:
        raise InputFileError(f"{others[0]} is neither .parquet nor .jsonl; the cluster engine reads those two")
    return sorted(dict.fromkeys(p.resolve() for p in found))


def describe(files: Sequence[Path]) -> list[InputFile]:
    return [InputFile(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def plan(files: Sequence[Path], shard_rows: int, text_column: str, id_column: str | None) -> list[Shard]:
    """Cut the input files into shards of at most `shard_rows` rows (a shard never spans two files).

    Raises:
        InputFileError: a file cannot be read, or lacks the text or id column.
    """
    shards: list[Shard] = []
    for path in files:
        kind = FORMATS[path.suffix.lower()]
        ranges = _parquet_ranges(path, shard_rows, text_column, id_column) if kind == "parquet" else None
        if ranges is None:
            ranges = _jsonl_ranges(path, shard_rows)
        label = _label(path, files) if len(files) > 1 else ""
        for start, stop, rows, first_line in ranges:
            shards.append(Shard(len(shards), str(path), kind, start, stop, rows, first_line, label))
    return shards


def _label(path: Path, files: Sequence[Path]) -> str:
    """A file's name, or its path when another input file has the same name."""
    return path.name if sum(f.name == path.name for f in files) == 1 else str(path)


def _parquet_ranges(
    path: Path, shard_rows: int, text_column: str, id_column: str | None
) -> list[tuple[int, int, int, int]]:
    try:
        meta = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"cannot read {path} as Parquet: {exc}") from exc
    names = meta.schema_arrow.names
    for wanted in (text_column, id_column):
        if wanted is not None and wanted not in names:
            raise InputFileError(f"{path} has no column {wanted!r} (columns: {', '.join(names)})")
    total = meta.metadata.num_rows
    return [
        (start, min(start + shard_rows, total), min(shard_rows, total - start), start + 1)
        for start in range(0, total, shard_rows)
    ]


def _jsonl_ranges(path: Path, shard_rows: int) -> list[tuple[int, int, int, int]]:
    """Byte ranges of whole lines holding `shard_rows` non-blank lines each, with their first line's number."""
    ranges: list[tuple[int, int, int, int]] = []
    start = offset = rows = lines = 0
    first_line = 1
    try:
        with path.open("rb") as handle:
            for line in handle:
                offset += len(line)
                lines += 1
                if line.strip():
                    rows += 1
                    if rows == shard_rows:
                        ranges.append((start, offset, rows, first_line))
                        start, rows, first_line = offset, 0, lines + 1
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if rows:
        ranges.append((start, offset, rows, first_line))
    return ranges


def read(shard: Shard, text_column: str, id_column: str | None) -> tuple[pa.Array, list[str]]:
    """A shard's ids (their Arrow type as stored; without an id column, each row's line or row number in its
    file, as text, after the file's label and a colon when the job reads several files) and texts.

    Raises:
        InputFileError: a row lacks a string text or an id; the message names the file and row.
    """
    if shard.format == "parquet":
        columns = [text_column] if id_column is None else [id_column, text_column]
        table = _parquet_rows(Path(shard.file), shard.start, shard.stop, columns)
        texts = table.column(text_column).to_pylist()
        numbers = list(range(shard.first_line, shard.first_line + len(texts)))
        ids = None if id_column is None else table.column(id_column).combine_chunks()
    else:
        items = _jsonl_rows(Path(shard.file), shard.start, shard.stop, shard.first_line)
        numbers = [number for number, _ in items]
        for number, item in items:
            if not isinstance(item, dict) or (id_column is not None and id_column not in item):
                wanted = "an object" if id_column is None else f"an object with an {id_column!r} field"
                raise InputFileError(f"{shard.file}, line {number}: expected {wanted}")
        try:
            ids = None if id_column is None else pa.array([item[id_column] for _, item in items])
        except (pa.ArrowException, TypeError) as exc:
            raise InputFileError(f"{shard.file}: the {id_column!r} values are of mixed types ({exc})") from exc
        texts = [item.get(text_column) for _, item in items]
    if ids is None:
        prefix = f"{shard.label}:" if shard.label else ""
        ids = pa.array([f"{prefix}{number}" for number in numbers], type=pa.string())
    where = "row" if shard.format == "parquet" else "line"
    for number, key, text in zip(numbers, ids.to_pylist(), texts):
        if not isinstance(text, str) or key is None:
            needs = f"a string {text_column!r}" + ("" if id_column is None else f" and an {id_column!r}")
            raise InputFileError(f"{shard.file}, {where} {number}: needs {needs}")
    return ids, texts


def _parquet_rows(path: Path, start: int, stop: int, columns: list[str]) -> pa.Table:
    """Rows start … stop, reading only the row groups that hold them."""
    handle = pq.ParquetFile(path)
    groups, first, offset = [], None, 0
    for group in range(handle.metadata.num_row_groups):
        count = handle.metadata.row_group(group).num_rows
        if offset < stop and offset + count > start:
            groups.append(group)
            first = offset if first is None else first
        offset += count
    table = handle.read_row_groups(groups, columns=columns)
    return table.slice(start - (first or 0), stop - start)


def _jsonl_rows(path: Path, start: int, stop: int, first_line: int) -> list[tuple[int, Any]]:
    """The objects on the lines in bytes start … stop, with their line numbers in the file."""
    with path.open("rb") as handle:
        handle.seek(start)
        raw = handle.read(stop - start)
    items = []
    for number, line in enumerate(raw.splitlines(), start=first_line):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputFileError(f"{path}, line {number}: not valid JSON ({exc})") from exc
    return items


def write(path: Path, columns: dict[str, Any], vectors: np.ndarray, meta: dict[str, Any]) -> None:
    """Write one shard's columns (its ids, …) and vectors, with the job's settings in the file metadata,
    atomically."""
    write_parquet(path, columns, vectors, meta)


def chunk_rows(ids: pa.Array, chunks: Sequence[ChunkEmbeddings], width: int) -> tuple[dict[str, Any], np.ndarray]:
    """A row per chunk: its text's id, its index in the text, its character span and text; and the vectors."""
    owner = [row for row, chunked in enumerate(chunks) for _ in chunked.chunks]
    columns = {
        "id": ids.take(pa.array(owner, type=pa.int64())),
        "chunk": pa.array([i for chunked in chunks for i in range(len(chunked.chunks))], type=pa.int32()),
        "start": pa.array([a for chunked in chunks for a, _ in chunked.spans], type=pa.int64()),
        "end": pa.array([b for chunked in chunks for _, b in chunked.spans], type=pa.int64()),
        "text": pa.array([text for chunked in chunks for text in chunked.chunks], type=pa.string()),
    }
    vectors = [chunked.vectors for chunked in chunks if len(chunked.vectors)]
    return columns, (np.concatenate(vectors) if vectors else np.zeros((0, width), dtype=np.float32))
