"""Reading texts for `bertx embed`: plain text (one per line), JSONL (a named field) or CSV (a named column)."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InputFileError


@dataclass(frozen=True)
class Record:
    """One text to embed, with the id it is written out under (the line or row number unless given)."""

    id: str
    text: str


def read_records(source: str, field: str = "text", column: str = "text", id_field: str | None = None) -> list[Record]:
    """Read texts from a file, or from standard input when `source` is "-".

    The format follows the extension: .jsonl/.ndjson (each line a JSON object, text in `field`), .csv
    (text in `column`), anything else plain text with one text per line. Blank lines are skipped.

    Raises:
        InputFileError: the file cannot be read or decoded, or a line lacks the field; the message
            names the line.
    """
    name = "standard input" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read input file {source}: {exc.strerror or exc}") from exc
    lines = _decode_lines(raw, name)
    suffix = Path(source).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(lines, name, field, id_field)
    if suffix == ".csv":
        return _csv(lines, name, column, id_field)
    return [Record(str(number), text) for number, text in lines if text.strip()]


def _decode_lines(raw: bytes, name: str) -> list[tuple[int, str]]:
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFileError(
                f"{name}, line {number}: not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
            ) from exc
        lines.append((number, text.removeprefix("\ufeff") if number == 1 else text))
    return lines


def _jsonl(lines: list[tuple[int, str]], name: str, field: str, id_field: str | None) -> list[Record]:
    records = []
    for number, text in lines:
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{name}, line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(item, dict) or not isinstance(item.get(field), str):
            raise InputFileError(f"{name}, line {number}: expected an object with a string field {field!r}")
        key = item.get(id_field) if id_field else number
        records.append(Record(str(key), item[field]))
    return records


def _csv(lines: list[tuple[int, str]], name: str, column: str, id_field: str | None) -> list[Record]:
    reader = csv.DictReader(io.StringIO("\n".join(text for _, text in lines)))
    headers = reader.fieldnames or []
    for wanted in (column, id_field):
        if wanted is not None and wanted not in headers:
            raise InputFileError(f"{name}: no column {wanted!r} (columns: {', '.join(headers) or 'none'})")
    records = []
    for row_number, row in enumerate(reader, start=1):
        text = row.get(column)
        if text is None:
            raise InputFileError(f"{name}, row {row_number}: missing the {column!r} column")
        if text.strip():
            records.append(Record(str(row[id_field]) if id_field else str(row_number), text))
    return records
