"""Rewrite the README's table of options from their one definition (`bertx.options`)."""

from __future__ import annotations

from pathlib import Path

from bertx.options import options_table

START, END = "<!-- options:start -->", "<!-- options:end -->"


def main() -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{options_table()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
