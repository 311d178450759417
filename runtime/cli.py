"""The `bertx` command line: export, embed, info.

Commands are thin: parse options, call one library function, print. A `BertxError` becomes one red
line and exit code 2. The exporter (and with it torch) is imported inside `export` only.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .display import layer_table, parity_table, variants_table
from .errors import BertxError, InputFileError
from .manifest import Manifest, Pooling, Precision
from .session import Device

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="BERT-family embeddings from ONNX: export with every hidden state, embed without torch.",
)
err = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


class OptimizeChoice(str, Enum):
    """Graph optimization levels offered on the command line."""

    O1 = "O1"
    O2 = "O2"
    O3 = "O3"


def _user_errors(command: F) -> F:
    """Print a `BertxError` (and Ctrl-C) as one line and exit non-zero, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = command(*args, **kwargs)
            for warning in caught:
                if warning.category.__module__.startswith("bertx"):
                    err.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
                else:
                    warnings.showwarning(
                        warning.message, warning.category, warning.filename, warning.lineno, warning.file
                    )
            return result
        except BertxError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
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


@app.command()
@_user_errors
def export(
    model: Annotated[str, typer.Argument(help="Local folder, Hugging Face id (cache or hub), or packaged model id.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Artifact folder [default: models/<name>].")
    ] = None,
    optimize: Annotated[OptimizeChoice, typer.Option(help="ONNX Runtime graph fusion level.")] = OptimizeChoice.O2,
    int8: Annotated[bool, typer.Option("--int8", help="Add a dynamic per-channel INT8 variant.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Add an FP16 variant (fp32 inputs/outputs), for GPUs.")] = False,
    opset: Annotated[int | None, typer.Option(help="ONNX opset [default: Optimum's choice].")] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Max tokens per text [default: the model's or sentence-transformers']")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing artifact folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    validate: Annotated[
        bool, typer.Option("--validate/--no-validate", help="Check every variant against PyTorch.")
    ] = True,
    min_cosine: Annotated[
        list[str] | None,
        typer.Option(
            "--min-cosine",
            metavar="VARIANT=X",
            help="Override a variant's min cosine threshold, e.g. int8=0.97 (repeatable).",
        ),
    ] = None,
    max_abs: Annotated[
        float | None, typer.Option(help="Override fp32's max abs error threshold per hidden state [1e-4].")
    ] = None,
) -> None:
    """Export MODEL to ONNX with every hidden state, fuse it, add INT8/FP16 variants, check parity."""
    try:
        from .exporter import ExportOptions, OptimizeLevel, export_model, parse_thresholds
    except ImportError as exc:
        if isinstance(exc, BertxError):
            raise
        raise typer.BadParameter(f"the exporter cannot be imported ({exc})") from exc
    options = ExportOptions(
        thresholds=parse_thresholds(min_cosine or [], max_abs),
        model=model,
        output=output,
        optimize=OptimizeLevel(optimize.value),
        int8=int8,
        fp16=fp16,
        opset=opset,
        max_length=max_length,
        force=force,
        validate=validate,
    )
    result = export_model(options, console=err, quiet_mode=quiet)
    if quiet:
        return
    out.print(str(result.path))


@app.command()
@_user_errors
def embed(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.")] = None,
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="File with one text per line, or - for stdin.")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="FILE.npy, FILE.jsonl, or - for JSON lines on stdout.")
    ] = None,
    pooling: Annotated[Pooling | None, typer.Option(help="Pooling [default: the artifact's].")] = None,
    normalize: Annotated[
        bool | None, typer.Option("--normalize/--no-normalize", help="L2-normalize [default: the artifact's].")
    ] = None,
    variant: Annotated[Precision, typer.Option(help="Precision variant to run.")] = Precision.FP32,
    device: Annotated[Device, typer.Option(help="Execution provider.")] = Device.CPU,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per onnxruntime call.")] = 32,
    threads: Annotated[int | None, typer.Option(min=1, help="onnxruntime threads.")] = None,
) -> None:
    """Embed texts given as arguments or read from a file, one vector per text."""
    from .inputs import read_lines, write_embeddings
    from .model import Model

    items: list[tuple[int | None, str]] = [(None, t) for t in texts or []]
    if input is not None:
        items += read_lines(input)
    if not items:
        raise InputFileError("nothing to embed: give texts as arguments or --input FILE (- for stdin)")
    model = Model.from_pretrained(artifact, variant=variant, device=device, threads=threads)
    strings = [t for _, t in items]
    vectors = _embed_with_progress(model, strings, pooling, normalize, batch_size, show=input is not None)
    lines = [n for n, _ in items if n is not None] if input is not None and not texts else None
    if output is not None:
        write_embeddings(output, vectors, strings, lines)
        if output != "-":
            err.print(f"wrote {vectors.shape[0]} × {vectors.shape[1]} float32 to {output}")
        return
    table = Table(title=f"{vectors.shape[0]} embeddings × {vectors.shape[1]} ({model.variant.precision.value})")
    table.add_column("#", justify="right")
    table.add_column("text")
    table.add_column("norm", justify="right")
    table.add_column("first values")
    for i, (text, vector) in enumerate(zip(strings, vectors)):
        preview = " ".join(f"{x:+.4f}" for x in vector[:4]) + " …"
        table.add_row(str(i), text if len(text) <= 60 else text[:57] + "…", f"{np.linalg.norm(vector):.4f}", preview)
    out.print(table)


def _embed_with_progress(
    model: Any, texts: list[str], pooling: Pooling | None, normalize: bool | None, batch_size: int, show: bool
) -> np.ndarray:
    if not show or len(texts) <= batch_size:
        return np.asarray(model.embed(texts, pooling=pooling, normalize=normalize, batch_size=batch_size))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    chunk = batch_size * 8
    parts = []
    columns = (
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("embed", total=len(texts), rate="")
        for start in range(0, len(texts), chunk):
            parts.append(model.embed(texts[start : start + chunk], pooling, normalize, batch_size))
            elapsed = progress.tasks[0].elapsed or 1e-9
            done = min(start + chunk, len(texts))
            progress.update(task, completed=done, rate=f"{done / elapsed:,.0f} texts/s")
    return np.concatenate(parts)


@app.command()
@_user_errors
def info(artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")]) -> None:
    """Show an artifact: source, architecture, defaults, variants and their parity reports."""
    manifest = Manifest.load(artifact)
    arch, src, d = manifest.architecture, manifest.source, manifest.defaults
    out.print(f"[bold]{artifact}[/]  (bertx {manifest.bertx_version}, schema {manifest.schema_version})")
    out.print(f"source        {src.id}  via {src.found_via}  ({src.weights_file} sha256 {src.sha256[:12]}…)")
    out.print(
        f"architecture  {arch.model_type}: {arch.num_layers} layers, hidden {arch.hidden_size}, "
        f"{arch.num_heads} heads, vocab {arch.vocab_size}"
    )
    out.print(
        f"defaults      pooling {d.pooling.value}, normalize {d.normalize}, max_seq_length {d.max_seq_length} "
        f"({d.origin})"
    )
    out.print(f"outputs       {manifest.outputs[0]} … {manifest.outputs[-1]}")
    out.print(variants_table(manifest))
    reports = {p.value: v.parity for p, v in manifest.variants.items()}
    checked = {name: report for name, report in reports.items() if report is not None}
    if checked:
        out.print(layer_table(checked))
    out.print(parity_table(reports))


def main() -> None:
    """Entry point of the `bertx` console script."""
    app()


if __name__ == "__main__":
    main()
