"""What every example shares: the model options, loading the artifact, and reading the bundled data."""

from __future__ import annotations

import argparse
from pathlib import Path

import bertx

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_ARTIFACT = "models/all-MiniLM-L6-v2"


def model_arguments(description: str | None) -> argparse.ArgumentParser:
    """A parser with the options every example takes: --artifact, --variant and --threads."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--artifact",
        default=DEFAULT_ARTIFACT,
        help=f"a folder written by `bertx export` (default: {DEFAULT_ARTIFACT})",
    )
    parser.add_argument("--variant", default="fp32", help="fp32 (default), int8, fp16 or bf16")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the CPUs available)")
    return parser


def artifact_path(given: str) -> Path:
    """The artifact folder: `given` as it is, or the default relative to the repository when the example
    runs from another folder. Exits with one line when there is none."""
    path = Path(given)
    if not (path / "bertx.json").is_file() and given == DEFAULT_ARTIFACT and (REPO / given / "bertx.json").is_file():
        path = REPO / given
    if not (path / "bertx.json").is_file():
        raise SystemExit(
            f"no bertx artifact at {given}: run `make demo` or "
            f"`bertx export sentence-transformers/all-MiniLM-L6-v2 -o {given}` first"
        )
    return path


def load_model(args: argparse.Namespace) -> bertx.Model:
    """Load the artifact named by the parsed options, read-only; a bertx error becomes one line."""
    try:
        return bertx.Model.from_pretrained(artifact_path(args.artifact), variant=args.variant, threads=args.threads)
    except bertx.BertxError as exc:
        raise SystemExit(f"cannot load {args.artifact}: {exc}") from None


def read_tsv(name: str, columns: int) -> list[list[str]]:
    """The rows of a tab-separated file in examples/data/ (UTF-8, no header), each with `columns` fields."""
    rows = []
    for number, line in enumerate((DATA / name).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != columns:
            raise SystemExit(f"{DATA / name}:{number}: expected {columns} tab-separated fields, found {len(fields)}")
        rows.append(fields)
    return rows
