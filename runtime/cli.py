"""The `bertx` command line: export, embed, search, vocab, serve, info, verify, doctor, bench.

Commands are thin: parse options, build the options value, call one library function, print; each
group lives in `bertx.commands`. A `BertxError` becomes one red line and exit code 2. The exporter
(and with it torch) is imported inside `export` only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .commands import bench, embed, export, inspect, search, serve, vocab  # noqa: F401  (they register commands)
from .commands.common import app

__all__ = ["app", "main", "optional_int8_value"]


def optional_int8_value(argv: list[str]) -> list[str]:
    """`--int8` alone means `--int8 auto`: typer options cannot take an optional value themselves.

    The next argument is `--int8`'s value unless it is an option or an existing path (a model folder).
    """
    fixed = []
    for i, arg in enumerate(argv):
        fixed.append(arg)
        if arg == "--int8":
            following = argv[i + 1] if i + 1 < len(argv) else ""
            if not following or following.startswith("-") or Path(following).exists():
                fixed.append("auto")
    return fixed


def main() -> None:
    """Entry point of the `bertx` console script."""
    app(args=optional_int8_value(sys.argv[1:]), prog_name="bertx")


if __name__ == "__main__":
    main()
