"""The one writer of bench results: JSON (and its Markdown beside it), each file written whole beside its
target and renamed into place, so a run stopped halfway never leaves half a result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> Path:
    """`data` as indented JSON at `path` (numpy scalars as floats)."""
    return write_text(path, json.dumps(data, indent=1, default=float) + "\n")


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path


def write_results(out_dir: Path, stem: str, data: Any, markdown: str) -> list[Path]:
    """STEM.json and STEM.md in `out_dir`; returns their paths."""
    return [write_json(out_dir / f"{stem}.json", data), write_text(out_dir / f"{stem}.md", markdown)]
