"""Reading texts from files for `bertx embed`, and writing embeddings out atomically."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputFileError


def read_lines(source: str) -> list[tuple[int, str]]:
    """Read one text per line from a file, or from standard input when `source` is "-".

    Returns (line number, text) pairs; blank lines are skipped. Undecodable bytes raise
    `InputFileError` naming the line.
    """
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read input file {source}: {exc.strerror or exc}") from exc
    texts = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFileError(
                f"{'standard input' if source == '-' else source}, line {number}: not valid UTF-8 "
                f"(byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
            ) from exc
        if text.strip():
            texts.append((number, text.removeprefix("\ufeff") if number == 1 else text))
    return texts


def write_embeddings(path: str, vectors: np.ndarray, texts: Sequence[str], lines: Sequence[int] | None) -> None:
    """Write vectors as .npy, or as JSON lines (.jsonl, or "-" for standard output).

    A file is written under a temporary name and renamed, so a failed run never leaves half of one.
    """
    if path == "-":
        _write_jsonl(sys.stdout, vectors, texts, lines)
        return
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".npy", ".jsonl"):
        raise InputFileError(f"--output must end in .npy or .jsonl (or be - for JSON lines on stdout), got {path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(
            handle, "wb" if suffix == ".npy" else "w", encoding=None if suffix == ".npy" else "utf-8"
        ) as out:
            if suffix == ".npy":
                np.save(out, vectors)
            else:
                _write_jsonl(out, vectors, texts, lines)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_jsonl(out: object, vectors: np.ndarray, texts: Sequence[str], lines: Sequence[int] | None) -> None:
    write = out.write  # type: ignore[attr-defined]
    for i, (text, vector) in enumerate(zip(texts, vectors)):
        record: dict[str, object] = {"index": i}
        if lines is not None:
            record["line"] = lines[i]
        record["text"] = text
        record["embedding"] = [round(float(x), 7) for x in vector]
        write(json.dumps(record, ensure_ascii=False) + "\n")
