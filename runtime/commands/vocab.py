"""`bertx vocab`: a static word-vector table from an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertx.errors import InputFileError, OptionError
from bertx.options import DEFAULTS

from .common import VARIANT_HELP, DType, VariantChoice, app, err, option_help, parse_weights, user_errors


@app.command()
@user_errors
def vocab(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Table file to write (.npz; replaced if it exists).")],
    words: Annotated[
        str | None,
        typer.Option(
            "--word-file",
            "--words",
            metavar="FILE",
            help="Also store a vector for each word of FILE (one per line; - for stdin) that is not one piece.",
        ),
    ] = None,
    vocabulary: Annotated[
        bool, typer.Option("--vocabulary", help="Vocabulary pieces only (the default without --word-file).")
    ] = False,
    layers: Annotated[str | None, typer.Option(help=option_help("layers"))] = None,
    combine: Annotated[str, typer.Option(help=option_help("combine"))] = DEFAULTS["combine"].value,
    layer_weights: Annotated[
        str | None, typer.Option(metavar="W1,W2,…", help=option_help("layer_weights", "Comma-separated."))
    ] = None,
    merge: Annotated[str, typer.Option(help=option_help("merge", "For --word-file words."))] = DEFAULTS["merge"].value,
    variant: Annotated[VariantChoice, typer.Option(help=VARIANT_HELP)] = VariantChoice.FP32,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads [what the process may use].")] = None,
    dtype: Annotated[DType, typer.Option(help="Float type the vectors are stored in.")] = DType.FLOAT32,
    batch_size: Annotated[int, typer.Option(min=1, help="Vocabulary entries (or words) per inference call.")] = 1024,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Build a static word-vector table: every vocabulary entry (and each --words word) embedded alone,
    for `bertx.StaticEmbeddings`, which embeds texts by averaging word vectors with no model."""
    import time

    from bertx.model import Model
    from bertx.static_build import build_table, read_words

    if output.suffix.lower() != ".npz" or output.is_dir():
        raise InputFileError(f"--output must be a file ending in .npz, got {output}")
    if words is not None and vocabulary:
        raise OptionError("--vocabulary stores the vocabulary alone and --word-file adds words to it: give one of them")
    started = time.perf_counter()
    word_list = read_words(words) if words is not None else None
    model = Model.from_pretrained(artifact, variant=variant, threads=threads)
    table = build_table(
        model,
        word_list,
        layers=layers,
        merge=merge,
        combine=combine,
        layer_weights=None if layer_weights is None else parse_weights(layer_weights),
        batch_size=batch_size,
        dtype=dtype.value,
        progress=not quiet and err.is_terminal,
    )
    table.save(output)
    if not quiet:
        size = output.stat().st_size / 1e6
        err.print(
            f"wrote {output}: {table.pieces:,} pieces, {len(table.stored_words):,} words, dim {table.dim}, "
            f"{dtype.value}, {size:.1f} MB, {time.perf_counter() - started:.1f} s",
            highlight=False,
            soft_wrap=True,
        )
