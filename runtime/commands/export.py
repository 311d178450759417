"""`bertx export`: a model to ONNX with every hidden state, fused, with its variants, proven."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bertx.backends import Backend
from bertx.errors import BertxError
from bertx.prompts import parse_prompt

from .common import app, err, out, user_errors


class OptimizeChoice(str, Enum):
    """Graph optimization levels offered on the command line."""

    O1 = "O1"
    O2 = "O2"
    O3 = "O3"


class Int8Engine(str, Enum):
    """Which engines the INT8 search may choose a variant for."""

    ANY = "any"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


_INT8_ENGINES = {
    Int8Engine.ANY: (Backend.ONNXRUNTIME, Backend.OPENVINO),
    Int8Engine.ONNXRUNTIME: (Backend.ONNXRUNTIME,),
    Int8Engine.OPENVINO: (Backend.OPENVINO,),
}


@app.command()
@user_errors
def export(
    model: Annotated[str, typer.Argument(help="Local folder, Hugging Face id (cache or hub), or packaged model id.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Artifact folder [default: models/<name>].")
    ] = None,
    optimize: Annotated[OptimizeChoice, typer.Option(help="ONNX Runtime graph fusion level.")] = OptimizeChoice.O2,
    int8: Annotated[
        str | None,
        typer.Option(
            "--int8",
            metavar="[auto|RECIPE]",
            help="Add an INT8 variant. Alone or 'auto': measure the recipes on this CPU and keep the fastest "
            "that meets --int8-target-cosine (OpenVINO candidates too, when installed); or name one (dynamic, "
            "smooth-dynamic, blockwise, static-entropy, mixed-K, openvino-static, …).",
        ),
    ] = None,
    int8_target_cosine: Annotated[
        float, typer.Option(help="Min cosine against PyTorch on held-out text that the INT8 search must reach.")
    ] = 0.995,
    allow_below_target: Annotated[
        bool, typer.Option("--allow-below-target", help="If no INT8 recipe meets the target, keep the most accurate.")
    ] = False,
    calibration_file: Annotated[
        Path | None, typer.Option(help="Your own calibration text, one per line [default: built-in].")
    ] = None,
    int8_engine: Annotated[
        Int8Engine,
        typer.Option(help="Engines --int8 auto may choose from: any, onnxruntime (e.g. for GPUs) or openvino."),
    ] = Int8Engine.ANY,
    fp16: Annotated[bool, typer.Option("--fp16", help="Add an FP16 variant (fp32 inputs/outputs), for GPUs.")] = False,
    bf16: Annotated[
        bool,
        typer.Option(
            "--bf16", help="Add a bf16 variant, run by OpenVINO: only on CPUs with AVX-512 BF16 or AMX (bertx doctor)."
        ),
    ] = False,
    sentence_embedding: Annotated[
        bool,
        typer.Option(
            "--sentence-embedding",
            help="Add a `sentence_embedding` output to each ONNX graph (the model's default pooling), for "
            "onnxruntime users without bertx.",
        ),
    ] = False,
    sentence_normalize: Annotated[
        bool | None,
        typer.Option(
            "--sentence-normalize/--no-sentence-normalize",
            help="L2-normalize the sentence_embedding output [default: as the model's defaults say].",
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            "--prompt",
            metavar="NAME=TEXT",
            help="Add a prompt to the manifest, e.g. query='query: ' (repeatable; replaces one the model declares).",
        ),
    ] = None,
    default_prompt_name: Annotated[
        str | None,
        typer.Option(help="The prompt put before every text when a call names none ('' for none) [the model's]."),
    ] = None,
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
    """Export MODEL to ONNX with every hidden state, fuse it, add INT8/FP16/BF16 variants, check parity."""
    try:
        from bertx.exporter import ExportOptions, Int8Options, OptimizeLevel, export_model, parse_thresholds
    except ImportError as exc:
        if isinstance(exc, BertxError):
            raise
        raise typer.BadParameter(f"the exporter cannot be imported ({exc})") from exc
    options = ExportOptions(
        thresholds=parse_thresholds(min_cosine or [], max_abs),
        int8_options=Int8Options(
            recipe=int8 or "auto",
            target_cosine=int8_target_cosine,
            allow_below_target=allow_below_target,
            calibration_file=calibration_file,
            engines=_INT8_ENGINES[int8_engine],
        ),
        model=model,
        output=output,
        optimize=OptimizeLevel(optimize.value),
        int8=int8 is not None,
        fp16=fp16,
        bf16=bf16,
        opset=opset,
        max_length=max_length,
        force=force,
        validate=validate,
        sentence_embedding=sentence_embedding,
        sentence_normalize=sentence_normalize,
        prompts=tuple(parse_prompt(value) for value in prompt or []),
        default_prompt_name=default_prompt_name,
    )
    result = export_model(options, console=err, quiet_mode=quiet)
    if quiet:
        return
    out.print(str(result.path))
