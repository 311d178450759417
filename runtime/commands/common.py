"""What every command shares: the Typer app, the consoles, user errors as one line, the variant choice."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from bertx import __version__
from bertx.errors import BertxError, InputFileError, OptionError
from bertx.options import SPEC

app = typer.Typer(
    rich_markup_mode=None,
    add_completion=False,
    no_args_is_help=True,
    help="BERT-family embeddings from ONNX: export with every hidden state, embed without torch.",
)

err = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


class VariantChoice(str, Enum):
    """A variant to load: one of the artifact's precisions, or auto (the export's recommendation)."""

    FP32 = "fp32"
    INT8 = "int8"
    FP16 = "fp16"
    BF16 = "bf16"
    AUTO = "auto"


VARIANT_HELP = "Precision variant: fp32, int8, fp16, bf16, or auto (what the export measured fastest here)."


class DType(str, Enum):
    """Float type of written vectors."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


def user_errors(command: F) -> F:
    """Print a `BertxError` (and Ctrl-C) as one line and exit non-zero, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = command(*args, **kwargs)
            for warning in caught:
                if warning.category.__module__.startswith("bertx"):
                    err.print(f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False)
                else:
                    warnings.showwarning(
                        warning.message, warning.category, warning.filename, warning.lineno, warning.file
                    )
            return result
        except BertxError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/]: nothing was written")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _show_version(value: bool) -> None:
    if value:
        out.print(f"bertx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_show_version, is_eager=True)
    ] = False,
) -> None:
    """BERT-family embeddings from ONNX: export with every hidden state, embed without torch."""


def ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputFileError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputFileError(f"{option} expects positive integers, got {text!r}")
    return values


def option_help(name: str, more: str = "") -> str:
    """An encode option's help, from its one definition (with its choices, when it has them)."""
    spec = SPEC[name]
    choices = f" One of: {', '.join(spec.choices)}." if spec.choices else ""
    return spec.help + choices + (" " + more if more else "")


def parse_weights(text: str) -> list[float]:
    """`--layer-weights 0.7,0.3` as numbers (EncodeOptions checks them)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise OptionError(f"cannot read layer_weights {text!r}: give comma-separated numbers, e.g. 0.7,0.3") from None
