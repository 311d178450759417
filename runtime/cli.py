"""The `bertx` command line: export, embed, search, vocab, serve, info, verify, doctor, bench.

Commands are thin: parse options, call one library function, print. A `BertxError` becomes one red
line and exit code 2. The exporter (and with it torch) is imported inside `export` only.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .backends import Backend
from .batching import DEFAULT_BATCH_TOKENS
from .chunking import LongTexts
from .compact import DEFAULT_RESCORE_MULTIPLIER, VectorPrecision
from .display import int8_search_table, layer_table, parity_table, variants_table
from .errors import ArtifactError, BertxError, InputFileError, MissingDependencyError, OptionError
from .layers import Combine
from .manifest import MANIFEST_NAME, Manifest, Precision
from .options import SENTENCE_OPTIONS
from .outputs import WordMerge
from .prompts import parse_prompt
from .session import Device
from .similarity import Metric

# Plain (click) help: Rich's option tables cut long option names ("--sentence-embed…") in a pipe or an
# 80-column terminal; click's layout prints every name whole and wraps the descriptions instead.
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


@app.command()
@_user_errors
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
        from .exporter import ExportOptions, Int8Options, OptimizeLevel, export_model, parse_thresholds
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


class EmbedEngine(str, Enum):
    """Where `bertx embed` runs: in this process, or on a Ray cluster over Parquet/JSONL files."""

    LOCAL = "local"
    RAY = "ray"


class DType(str, Enum):
    """Float type of written vectors."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


@app.command()
@_user_errors
def embed(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.")] = None,
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help="Text file (one per line), .jsonl or .csv; - for stdin."),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="FILE.npy, .npz (vectors + ids, for search), .jsonl, .parquet, or -."),
    ] = None,
    field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    column: Annotated[str, typer.Option(help="CSV column holding the text.")] = "text",
    id_field: Annotated[str | None, typer.Option(help="JSONL field / CSV column with ids [line number].")] = None,
    pooling: Annotated[
        str | None,
        typer.Option(help="cls, mean, max, mean_sqrt_len, first_last_avg, or none for token vectors (.jsonl)."),
    ] = None,
    layers: Annotated[str | None, typer.Option(help="-1, -4,-3, 2:5, last4, all, all+embeddings [last].")] = None,
    combine: Annotated[Combine, typer.Option(help="How several layers are combined.")] = Combine.MEAN,
    words: Annotated[
        WordMerge | None, typer.Option(help="Write word vectors (pieces merged this way) instead, as .jsonl.")
    ] = None,
    normalize: Annotated[
        bool | None, typer.Option("--normalize/--no-normalize", help="L2-normalize [default: the artifact's].")
    ] = None,
    long_texts: Annotated[
        LongTexts, typer.Option(help="Texts over max_seq_length: truncate, or chunk into overlapping windows.")
    ] = LongTexts.TRUNCATE,
    chunk_overlap: Annotated[int, typer.Option(min=0, help="Tokens shared by consecutive windows.")] = 32,
    chunk_window: Annotated[int | None, typer.Option(help="Tokens per window [max_seq_length].")] = None,
    hidden_states: Annotated[
        bool, typer.Option("--hidden-states", help="Write every hidden state per text (.npz), for analysis.")
    ] = False,
    dtype: Annotated[DType, typer.Option(help="Float type written to the output file.")] = DType.FLOAT32,
    truncate_dim: Annotated[
        int | None, typer.Option(help="Keep the first N dimensions (Matryoshka), normalized after the cut.")
    ] = None,
    prompt_name: Annotated[
        str | None,
        typer.Option(help="Put the artifact's prompt of this name before each text (bertx info lists them) [default]."),
    ] = None,
    prompt: Annotated[
        str | None, typer.Option(help="Put this text before each text instead ('' turns the default prompt off).")
    ] = None,
    precision: Annotated[
        VectorPrecision,
        typer.Option(help="Store vectors as int8/uint8 (per-dimension ranges) or packed sign bits (binary/ubinary)."),
    ] = VectorPrecision.FLOAT32,
    keep_float: Annotated[
        bool,
        typer.Option("--keep-float", help="With --precision: also store the float vectors (--dtype), for rescoring."),
    ] = False,
    variant: Annotated[VariantChoice, typer.Option(help=VARIANT_HELP)] = VariantChoice.FP32,
    device: Annotated[
        Device | None,
        typer.Option(
            help="cpu, cuda, tensorrt, openvino, auto [the variant's engine: onnxruntime's CPU, or OpenVINO]."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Most texts per inference call.")] = 32,
    batch_tokens: Annotated[
        int,
        typer.Option(min=0, help="Padded tokens per batch (long texts count extra); 0 batches by --batch-size only."),
    ] = DEFAULT_BATCH_TOKENS,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads [what the process may use].")] = None,
    allow_fallback: Annotated[
        bool, typer.Option("--allow-fallback", help="Run on the CPU if the CUDA provider is unavailable.")
    ] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check the model files' sha256 before loading.")
    ] = True,
    engine: Annotated[
        EmbedEngine,
        typer.Option(
            help="ray: embed Parquet/JSONL files (--input folder or glob) on a Ray cluster into Parquet shards "
            "in --output FOLDER, resumable (extra bertx[ray])."
        ),
    ] = EmbedEngine.LOCAL,
    address: Annotated[
        str | None, typer.Option(help="Ray: the cluster to join ('auto': this machine's) [a local Ray].")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Ray: model copies to run [as the CPUs allow].")] = None,
    cpus_per_worker: Annotated[int, typer.Option(min=1, help="Ray: CPUs (and threads) per worker.")] = 1,
    gpus_per_worker: Annotated[
        float | None, typer.Option(min=0, help="Ray: GPUs per worker [1 with --device cuda or tensorrt, else 0].")
    ] = None,
    shard_rows: Annotated[
        int, typer.Option(min=1, help="Ray: rows per output shard, the unit of progress and of resuming.")
    ] = 10_000,
) -> None:
    """Embed texts given as arguments or read from a file, one vector per text (or per word); with --engine ray,
    a corpus of Parquet or JSONL files on a Ray cluster."""
    from .embedding_files import check_output, write_hidden_states, write_tokens, write_vectors, write_words
    from .inputs import Record, read_records
    from .layers import parse_layers
    from .model import Model

    per_token = words is not None or pooling == "none"
    compact = precision is not VectorPrecision.FLOAT32
    settings: dict[str, Any] = {
        "pooling": pooling,
        "layers": layers,
        "combine": combine.value,
        "normalize_embeddings": normalize,
        "long_texts": long_texts.value,
        "chunk_overlap": chunk_overlap,
        "chunk_window": chunk_window,
        "truncate_dim": truncate_dim,
        "prompt_name": prompt_name,
        "prompt": prompt,
    }
    if engine is EmbedEngine.RAY:
        if per_token or hidden_states or compact or texts:
            raise OptionError(
                "--engine ray writes sentence vectors of the --input files: no texts as arguments, --words, "
                "--pooling none, --hidden-states or --precision"
            )
        if input is None or output is None:
            raise OptionError("--engine ray needs --input (a folder, glob or file) and --output FOLDER")
        ray_job = {
            "artifact": str(artifact.resolve()),
            "output": output,
            "text_column": field,
            "id_column": id_field or "id",
            "variant": variant.value,
            "device": None if device is None else device.value,
            "dtype": dtype.value,
            "shard_rows": shard_rows,
            "batch_size": batch_size,
            "batch_tokens": batch_tokens or None,
        }
        _embed_on_ray(ray_job, settings, input, address, workers, cpus_per_worker, gpus_per_worker)
        return
    if (compact or truncate_dim is not None) and (per_token or hidden_states):
        raise OptionError("--precision and --truncate-dim apply to sentence vectors, not word/token/hidden states")
    if (prompt_name is not None or prompt is not None) and (per_token or hidden_states):
        raise OptionError("--prompt-name and --prompt apply to sentence vectors, not word/token/hidden states")
    if keep_float and not compact:
        raise OptionError("--keep-float keeps float vectors beside quantized ones: give --precision too")
    if (output is not None or per_token or compact) and not hidden_states:
        check_output(output, words=per_token, precision=precision.value)
    records = [Record(str(i), t) for i, t in enumerate(texts or [])]
    if input is not None:
        records += read_records(input, field=field, column=column, id_field=id_field)
    if not records:
        raise InputFileError("nothing to embed: give texts as arguments or --input FILE (- for stdin)")
    model = Model.from_pretrained(
        artifact,
        variant=variant,
        device=device,
        threads=threads,
        allow_fallback=allow_fallback,
        batch_tokens=batch_tokens,
        verify=verify,
    )
    strings = [r.text for r in records]
    layer_spec = parse_layers(layers) if layers is not None else None
    if hidden_states:
        if output is None or not output.lower().endswith(".npz"):
            raise InputFileError("--hidden-states writes one array per text: give --output FILE.npz")
        write_hidden_states(output, model.hidden_states(strings, batch_size=batch_size), records)
        return
    chunking: dict[str, Any] = {
        "long_texts": long_texts,
        "chunk_overlap": chunk_overlap,
        "chunk_window": chunk_window,
    }
    if words is not None and output is not None:
        merged = model.encode_words(
            strings, merge=words, batch_size=batch_size, layers=layer_spec, combine=combine, **chunking
        )
        write_words(output, merged, records, dtype.value)
        return
    if pooling == "none" and output is not None:
        tokens = model.encode_tokens(strings, batch_size=batch_size, layers=layer_spec, combine=combine, **chunking)
        write_tokens(output, tokens, records, dtype.value)
        return
    vectors = _encode(model, strings, settings, batch_size, show=input is not None and len(strings) > batch_size)
    exact, vectors = vectors, vectors.astype(dtype.value, copy=False)
    if output is not None:
        meta = {
            "artifact": str(artifact.resolve()),
            "variant": model.variant.precision.value,
            "bertx": __version__,
            **settings,
        }
        meta["prompt_text"] = model.prompt_text(prompt_name, prompt)
        if compact:
            _write_compact(output, exact, records, meta, precision, dtype.value if keep_float else None)
            return
        write_vectors(output, vectors, records, meta)
        if output != "-":
            err.print(f"wrote {vectors.shape[0]} × {vectors.shape[1]} {dtype.value} to {output}")
        return
    table = Table(title=f"{vectors.shape[0]} embeddings × {vectors.shape[1]} ({model.variant.precision.value})")
    table.add_column("#", justify="right")
    table.add_column("text")
    table.add_column("norm", justify="right")
    table.add_column("first values")
    for record, vector in zip(records, vectors):
        preview = " ".join(f"{x:+.4f}" for x in vector[:4]) + " …"
        text = record.text if len(record.text) <= 60 else record.text[:57] + "…"
        table.add_row(record.id, text, f"{np.linalg.norm(vector):.4f}", preview)
    out.print(table)


def _embed_on_ray(
    job: dict[str, Any],
    settings: dict[str, Any],
    inputs: str,
    address: str | None,
    workers: int | None,
    cpus_per_worker: int,
    gpus_per_worker: float | None,
) -> None:
    """`bertx embed --engine ray`: the corpus job, with progress on standard error."""
    import logging

    try:
        from .distributed import CorpusJob, embed_corpus
    except ImportError as exc:
        if isinstance(exc, BertxError):
            raise
        raise MissingDependencyError(f"the Ray engine cannot be imported ({exc}): pip install 'bertx[ray]'") from exc

    options = {key: value for key, value in settings.items() if value is not None}
    logging.getLogger("ray").setLevel(logging.WARNING)
    result = embed_corpus(
        CorpusJob(options=options, **job),
        inputs,
        address=address,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        progress=lambda message: err.print(message, highlight=False),
    )
    err.print(
        f"{result.shards} shards in {result.output}: {result.embedded} embedded now ({result.rows} texts, "
        f"{result.texts_per_s:.1f} texts/s), {result.skipped} done before",
        highlight=False,
    )


def _write_compact(
    output: str, floats: np.ndarray, records: list[Any], meta: dict[str, Any], how: VectorPrecision, keep: str | None
) -> None:
    """Quantize float32 sentence vectors and write them with their calibration ranges (and, in the float type
    `keep`, the float vectors)."""
    from .compact import calibration_ranges, quantize
    from .embedding_files import write_vectors

    arrays = {"float_vectors": floats.astype(keep)} if keep else {}
    ranges = calibration_ranges(floats) if how.needs_ranges else None
    if ranges is not None:
        arrays["ranges"] = ranges
    packed = quantize(floats, how, ranges)
    write_vectors(output, packed, records, {**meta, "precision": how.value, "dim": floats.shape[1]}, arrays)
    kept = f", plus {keep} vectors for rescoring" if keep else ""
    err.print(
        f"wrote {len(packed)} × {floats.shape[1]} dims as {how.value} ({packed.nbytes // max(len(packed), 1)} "
        f"bytes per vector, {floats.nbytes / max(packed.nbytes, 1):.0f}× smaller than float32){kept} to {output}"
    )


def _encode(
    model: Any, texts: list[str], settings: dict[str, Any], batch_size: int, show: bool, query: bool = False
) -> np.ndarray:
    """Sentence vectors with the settings recorded in an embeddings file (layers as typed on the CLI); for
    search queries, with the artifact's query prompt unless the settings name one."""
    from .layers import parse_layers

    kwargs = dict(settings)
    kwargs["layers"] = parse_layers(kwargs["layers"]) if kwargs["layers"] is not None else None
    encode = model.encode_query if query else model.encode
    return np.asarray(encode(texts, batch_size=batch_size, show_progress_bar=show, **kwargs))


@app.command()
@_user_errors
def search(
    embeddings: Annotated[str, typer.Argument(help=".npz written by `bertx embed --output X.npz`.")],
    queries: Annotated[list[str], typer.Argument(help="Query texts.")],
    k: Annotated[int, typer.Option("-k", min=1, help="Results per query.")] = 5,
    metric: Annotated[Metric, typer.Option(help="Score.")] = Metric.COSINE,
    artifact: Annotated[Path | None, typer.Option(help="Artifact to embed queries with [the one recorded].")] = None,
    rescore_multiplier: Annotated[
        int,
        typer.Option(min=0, help="Quantized files: rescore the best k × this many with float vectors (0: don't)."),
    ] = DEFAULT_RESCORE_MULTIPLIER,
    prompt_name: Annotated[
        str | None,
        typer.Option(help="The artifact's prompt to put before each query [its 'query' prompt, else the default]."),
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="Put this text before each query instead.")] = None,
) -> None:
    """Find the texts of an embeddings file closest to each query, embedded by the same model.

    Over quantized vectors (embed --precision), the query is quantized alike, the best k × multiplier rows
    are found by int8 dot product or Hamming distance, and those are rescored with the float query.
    """
    from .embedding_files import read_npz
    from .model import Model
    from .similarity import top_k

    data = read_npz(embeddings)
    source = artifact or Path(str(data.meta.get("artifact", "")))
    model = Model.from_pretrained(source, variant=str(data.meta.get("variant", "fp32")))
    # The file's settings, except its prompt: queries get their own (encode_query's, or the one given here).
    settings = {key: data.meta[key] for key in SENTENCE_OPTIONS if data.meta.get(key) is not None}
    settings.update(layers=settings.get("layers"), prompt_name=prompt_name, prompt=prompt)
    vectors = _encode(model, list(queries), settings, 32, show=False, query=True)
    width = int(data.meta["dim"]) if "dim" in data.meta else int(data.vectors.shape[1])
    if vectors.shape[1] != width:
        raise InputFileError(f"queries embed to width {vectors.shape[1]} but {embeddings} holds width {width}")
    if data.precision == "float32":
        hits = top_k(vectors, data.vectors, k=k, metric=metric)
    else:
        hits = _search_compact(vectors, data, k, rescore_multiplier, metric)
    for query, rows, scores in zip(queries, hits.indices, hits.scores):
        table = Table(title=f"{query}")
        for column in ("rank", "score", "id", "text"):
            table.add_column(column, justify="right" if column in ("rank", "score") else "left")
        for rank, (row, score) in enumerate(zip(rows, scores), start=1):
            table.add_row(str(rank), f"{score:.4f}", data.ids[row], data.texts[row])
        out.print(table)


def _search_compact(vectors: np.ndarray, data: Any, k: int, multiplier: int, metric: Metric) -> Any:
    """Search quantized vectors, rescore, and say on standard error which mode ran."""
    from .compact import search

    how = VectorPrecision(data.precision)
    scan = "Hamming distance" if how.is_binary else f"{how.value} dot product"
    against = "the stored float vectors" if data.float_vectors is not None else "the unpacked ±1 vectors"
    if not how.is_binary and data.float_vectors is None:
        against = "the dequantized vectors"
    step = (
        f"rescored the best {k * multiplier} with the float query against {against}" if multiplier else "no rescoring"
    )
    err.print(f"searched {len(data.vectors)} {how.value} vectors by {scan}; {step}", highlight=False)
    return search(vectors, data.vectors, how, k, data.ranges, data.float_vectors, multiplier, metric)


@app.command()
@_user_errors
def vocab(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Table file to write (.npz; replaced if it exists).")],
    words: Annotated[
        str | None,
        typer.Option(
            "--words",
            metavar="FILE",
            help="Also store a vector for each word of FILE (one per line; - for stdin) that is not one piece.",
        ),
    ] = None,
    vocabulary: Annotated[
        bool, typer.Option("--vocabulary", help="Vocabulary pieces only (the default without --words).")
    ] = False,
    layers: Annotated[str | None, typer.Option(help="-1, -4,-3, 2:5, last4, all, all+embeddings [last].")] = None,
    combine: Annotated[Combine, typer.Option(help="How several layers are combined.")] = Combine.MEAN,
    merge: Annotated[WordMerge, typer.Option(help="How a --words word's pieces are merged.")] = WordMerge.MEAN,
    variant: Annotated[VariantChoice, typer.Option(help=VARIANT_HELP)] = VariantChoice.FP32,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads [what the process may use].")] = None,
    dtype: Annotated[DType, typer.Option(help="Float type the vectors are stored in.")] = DType.FLOAT32,
    batch_size: Annotated[int, typer.Option(min=1, help="Vocabulary entries (or words) per inference call.")] = 1024,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Build a static word-vector table: every vocabulary entry (and each --words word) embedded alone,
    for `bertx.StaticEmbeddings`, which embeds texts by averaging word vectors with no model."""
    import time

    from .layers import parse_layers
    from .model import Model
    from .static_build import build_table, read_words

    if output.suffix.lower() != ".npz" or output.is_dir():
        raise InputFileError(f"--output must be a file ending in .npz, got {output}")
    if words is not None and vocabulary:
        raise OptionError("--vocabulary stores the vocabulary alone and --words adds words to it: give one of them")
    started = time.perf_counter()
    word_list = read_words(words) if words is not None else None
    model = Model.from_pretrained(artifact, variant=variant, threads=threads)
    table = build_table(
        model,
        word_list,
        layers=parse_layers(layers) if layers is not None else None,
        merge=merge,
        combine=combine,
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


@app.command()
@_user_errors
def info(
    artifact: Annotated[
        Path | None, typer.Argument(help="Artifact folder written by `bertx export` [none: the supported models].")
    ] = None,
) -> None:
    """Show an artifact: source, architecture, defaults, variants and their parity reports; without one, the
    model types bertx exports."""
    if artifact is None:
        _supported_types()
        return
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
    prompts = manifest.prompts
    if prompts.named:
        listed = ", ".join(f"{name}={text!r}" for name, text in prompts.named.items())
        default = f"; default {prompts.default_name}" if prompts.default_name else "; no default"
        pooled = "" if prompts.include_prompt else "; pooled without the prompt's tokens"
        out.print(f"prompts       {escape(listed)}{default}{pooled} ({prompts.origin})", highlight=False)
    out.print(f"outputs       {manifest.outputs[0]} … {manifest.outputs[-1]}")
    if manifest.recommended is not None:
        rec = manifest.recommended
        out.print(
            f"recommended   [bold]{rec.variant.value}[/] (variant auto): {rec.reason}; measured on {rec.cpu}",
            highlight=False,
        )
    out.print(variants_table(manifest))
    reports = {p.value: v.parity for p, v in manifest.variants.items()}
    checked = {name: report for name, report in reports.items() if report is not None}
    if checked:
        out.print(layer_table(checked))
    out.print(parity_table(reports))
    int8 = manifest.variants.get(Precision.INT8)
    search_table = int8_search_table(int8) if int8 is not None else None
    if search_table is not None:
        out.print(search_table)


def _supported_types() -> None:
    from .architectures import NOT_YET, SUPPORTED

    table = Table(title="Model types bertx exports (transformers' model_type)")
    for column in ("model_type", "family", "positions", "for example"):
        table.add_column(column)
    for kind in SUPPORTED.values():
        table.add_row(kind.name, kind.family, kind.positions.value, kind.examples)
    out.print(table)
    out.print("Not supported yet:")
    for name, why in NOT_YET.items():
        out.print(f"  {name}: {why}", highlight=False)
    out.print("Any other type is refused at export with the list above.", highlight=False)


@app.command()
@_user_errors
def verify(artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")]) -> None:
    """Check every file of an artifact against the size and sha256 its manifest recorded at export."""
    from .artifact import verify_artifact

    checks = verify_artifact(artifact)
    sizes = [
        ("-" if c.size_bytes is None else f"{c.size_bytes:,} bytes")
        + (f" (manifest: {c.expected_bytes:,})" if c.status == "size differs" else "")
        for c in checks
    ]
    file_width = max(len(c.file) for c in checks)
    what_width = max(len(c.what) for c in checks)
    size_width = max(len(size) for size in sizes)
    for check, size in zip(checks, sizes):
        color = "green" if check.ok else "red"
        out.print(
            f"[{color}]{check.status:<14}[/] {check.file:<{file_width}}  {check.what:<{what_width}}  "
            f"{size:>{size_width}}  {check.seconds * 1000:6.0f} ms",
            highlight=False,
            soft_wrap=True,
        )
    failed = [check for check in checks if not check.ok]
    if failed:
        named = ", ".join(f"{check.file} ({check.status})" for check in failed)
        raise ArtifactError(
            f"{len(failed)} of {len(checks)} files do not match {artifact / MANIFEST_NAME}: {named}; "
            "the artifact is corrupted or incomplete, re-export the model"
        )
    seconds = sum(check.seconds for check in checks)
    out.print(f"all {len(checks)} files match {artifact / MANIFEST_NAME} ({seconds:.2f} s)", highlight=False)


@app.command()
@_user_errors
def similarity(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to compare with each other.")],
    metric: Annotated[Metric, typer.Option(help="Score.")] = Metric.COSINE,
    pooling: Annotated[str | None, typer.Option(help="Pooling [default: the artifact's].")] = None,
    layers: Annotated[str | None, typer.Option(help="-1, -4,-3, 2:5, last4, all [last].")] = None,
    variant: Annotated[VariantChoice, typer.Option(help=VARIANT_HELP)] = VariantChoice.FP32,
) -> None:
    """Print the similarity (or distance) matrix of a few texts."""
    from .model import Model
    from .similarity import pairwise

    model = Model.from_pretrained(artifact, variant=variant)
    settings = {"pooling": pooling, "layers": layers, "combine": "mean", "normalize_embeddings": None}
    scores = pairwise(_encode(model, list(texts), settings, 32, show=False), metric=metric)
    for i, text in enumerate(texts):
        out.print(f"[{i}] {text}")
    table = Table(title=f"{metric.value} ({model.variant.precision.value})")
    table.add_column("")
    for i in range(len(texts)):
        table.add_column(f"[{i}]", justify="right")
    for i, row in enumerate(scores):
        table.add_row(f"[{i}]", *(f"{x:.3f}" for x in row))
    out.print(table)


@app.command()
@_user_errors
def bench(
    artifact: Annotated[Path | None, typer.Argument(help="Artifact folder to benchmark.")] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="Random-weight architecture instead: bert-base-uncased, bert-large-uncased, minilm-l6."),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the JSON, markdown and PNG.")] = Path(
        "bench/results"
    ),
    name: Annotated[str | None, typer.Option(help="File stem of the results [artifact folder name].")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    lengths: Annotated[str, typer.Option(help="Comma-separated fixed token lengths (empty: none).")] = "16,128,512",
    texts: Annotated[int | None, typer.Option(min=1, help="Use only the first N corpus texts.")] = None,
    fixed_count: Annotated[int, typer.Option(min=1, help="Texts per fixed-length workload.")] = 64,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats per measurement.")] = 3,
    threads: Annotated[int, typer.Option(min=1, help="Threads for every engine.")] = 2,
    engines: Annotated[str | None, typer.Option(help="Comma-separated engines [all].")] = None,
    process_checks: Annotated[
        bool, typer.Option("--process-checks/--no-process-checks", help="Measure cold start and peak RSS.")
    ] = True,
    preset_int8: Annotated[
        str,
        typer.Option(
            "--preset-int8", help="INT8 recipe for a --preset export: auto (the full search) or a recipe name."
        ),
    ] = "auto",
) -> None:
    """Side-by-side speed, memory and accuracy against PyTorch and the tools users would pick instead."""
    import shlex
    import sys

    try:
        from .bench.harness import Settings, run
        from .bench.report import engines_table, headline_table, write
    except ImportError as exc:
        raise MissingDependencyError(
            f"bertx bench needs the export extra ({exc.name}): pip install torch==2.13.0 && pip install 'bertx[export]'"
        ) from None
    if (artifact is None) == (preset is None):
        raise InputFileError("give an ARTIFACT folder or --preset NAME (one of them)")
    if preset is None and preset_int8 != "auto":
        raise OptionError("--preset-int8 applies only with --preset")
    if preset is not None:
        from .bench.presets import preset_artifact

        artifact = preset_artifact(preset, Path("models"), int8_recipe=preset_int8)
    assert artifact is not None
    settings = Settings(
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        fixed_lengths=_ints(lengths, "--lengths") if lengths.strip() else (),
        fixed_count=fixed_count,
        corpus_limit=texts,
        repeats=repeats,
        threads=threads,
        engines=tuple(e.strip() for e in engines.split(",")) if engines else None,
        process_checks=process_checks,
    )
    with err.status("benchmarking …") as status:
        results = run(artifact, settings, progress=lambda message: status.update(message))
    out.print(headline_table(results))
    for workload in dict.fromkeys(r.workload for r in results.rows if r.workload != "corpus"):
        out.print(headline_table(results, workload))
    out.print(engines_table(results))
    command = "bertx bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    for path in write(results, out_dir, name or artifact.name, command):
        err.print(f"wrote {path}")


@app.command("bench-serve")
@_user_errors
def bench_serve(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder to serve.")],
    variant: Annotated[VariantChoice, typer.Option(help=VARIANT_HELP)] = VariantChoice.FP32,
    clients: Annotated[str, typer.Option(help="Comma-separated concurrency levels.")] = "1,8,32,64",
    requests: Annotated[int, typer.Option(min=1, help="Requests per level (after a warm-up).")] = 2000,
    seconds: Annotated[float, typer.Option(min=1, help="Longest a level runs, in seconds.")] = 60.0,
    texts: Annotated[int | None, typer.Option(min=1, help="Use only the first N corpus texts.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Inference threads for every server.")] = 2,
    soak: Annotated[
        float, typer.Option(min=0, help="Seconds of soak at --soak-clients after the levels (0: none).")
    ] = 0.0,
    soak_clients: Annotated[int, typer.Option(min=1, help="Clients during the soak.")] = 32,
    infinity: Annotated[
        bool, typer.Option("--infinity/--no-infinity", help="Also load-test infinity-emb where it is installed.")
    ] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the JSON and markdown.")] = Path("bench/results"),
    name: Annotated[str | None, typer.Option(help="File stem of the results [serve-ARTIFACT-VARIANT].")] = None,
) -> None:
    """Load-test `bertx serve` on 127.0.0.1: concurrent clients sending real text, throughput, latency
    percentiles, errors and server memory, next to bertx in-process and infinity-emb."""
    import shlex

    try:
        from .bench.serve_load import LoadSettings, markdown, run, write
        from .serving.server import require_extra
    except ImportError as exc:
        raise MissingDependencyError(
            f"bertx bench-serve needs the export and serve extras ({exc.name}): pip install 'bertx[export,serve]'"
        ) from None
    require_extra()
    settings = LoadSettings(
        clients=_ints(clients, "--clients"),
        requests=requests,
        seconds=seconds,
        texts=texts,
        variant=variant.value,
        threads=threads,
        soak_seconds=soak,
        soak_clients=soak_clients,
        infinity=infinity,
    )
    with err.status("load testing …") as status:
        results = run(artifact, settings, progress=lambda message: status.update(message))
    command = "bertx bench-serve " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    sys.stdout.write(markdown(results, command))
    for path in write(results, out_dir, name or f"serve-{artifact.name}-{variant.value}", command):
        err.print(f"wrote {path}")


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputFileError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputFileError(f"{option} expects positive integers, got {text!r}")
    return values


@app.command()
def serve(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")],
    variant: Annotated[VariantChoice, typer.Option(help=VARIANT_HELP)] = VariantChoice.FP32,
    device: Annotated[
        Device | None, typer.Option(help="cpu, cuda, tensorrt, openvino, auto [the variant's engine].")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File holding the API key clients send as `Authorization: Bearer KEY`.")
    ] = None,
    max_batch_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens one batching round of concurrent requests holds.")
    ] = 8192,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, max=1000, help="Wait for more requests in a round (0: run what is queued).")
    ] = 0.0,
    max_queue_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens that may wait; beyond, requests get 503 with Retry-After.")
    ] = 262_144,
    max_inputs: Annotated[int, typer.Option(min=1, help="Most texts per request.")] = 2048,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body, in MiB.")] = 8.0,
    batch_tokens: Annotated[
        int, typer.Option(min=0, help="Padded tokens per inference call inside a round; 0 batches by count only.")
    ] = DEFAULT_BATCH_TOKENS,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads [what the process may use].")] = None,
    model_name: Annotated[str | None, typer.Option(help="Name responses carry [the artifact's source id].")] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the model files' sha256 first.")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve embeddings over HTTP: OpenAI's /v1/embeddings, /embed (any layers), /embed/tokens, /embed/words,
    /health, /ready, /info, /metrics. Concurrent requests are batched together. Needs `bertx[serve]`."""
    try:
        _serve(**locals())
    except BertxError as exc:  # not through _user_errors: a server runs for days, its warnings are logged
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _serve(
    artifact: Path,
    variant: VariantChoice,
    device: Device | None,
    host: str,
    port: int,
    api_key_file: Path | None,
    max_batch_tokens: int,
    max_wait_ms: float,
    max_queue_tokens: int,
    max_inputs: int,
    max_body_mb: float,
    batch_tokens: int,
    threads: int | None,
    model_name: str | None,
    verify: bool,
    log_level: str,
) -> None:
    from .serving import BatchSettings, ServerSettings
    from .serving.server import read_api_key, require_extra
    from .serving.server import serve as run_server

    require_extra()
    settings = ServerSettings(
        batch=BatchSettings(max_batch_tokens, max_wait_ms, max_queue_tokens),
        max_inputs=max_inputs,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        api_key=read_api_key(api_key_file) if api_key_file is not None else None,
        model_name=model_name,
    )
    run_server(
        artifact,
        variant=variant.value,
        device=device.value if device is not None else None,
        threads=threads,
        host=host,
        port=port,
        settings=settings,
        batch_tokens=batch_tokens,
        verify=verify,
        log_level=log_level,
    )


@app.command()
@_user_errors
def doctor() -> None:
    """Show versions, the execution providers that really load, OpenVINO, CPU features (AVX2, AVX-512, VNNI,
    BF16, AMX), the CPU class and INT8 preset they suit, and the CPUs this process may use."""
    from .doctor import diagnose

    report = diagnose()
    out.print(f"python        {report.python}")
    for package, version in report.versions.items():
        out.print(f"{package:<13} {version or '[dim]not installed[/]'}")
    for check in report.providers:
        mark = "[green]ok[/]" if check.works else "[red]fails[/]"
        out.print(f"provider      {check.name}: {mark} ({check.detail})")
    cpu = report.cpu
    flags = ", ".join(
        f"{name} {'yes' if on else 'no'}"
        for name, on in (
            ("AVX2", cpu.avx2),
            ("AVX-512", cpu.avx512),
            ("VNNI", cpu.vnni),
            ("BF16", cpu.bf16),
            ("AMX", cpu.amx),
        )
    )
    out.print(f"cpu           {cpu.model} ({cpu.machine}): {flags}")
    out.print(f"cpu class     {cpu.cpu_class}")
    out.print(f"int8 preset   {cpu.int8_preset}")
    cpus = report.cpus
    quota = "none" if cpus.quota is None else f"{cpus.quota:g} CPUs"
    threads = str(cpus.usable) if cpus.restricted else "engine's choice"
    out.print(
        f"cpus          {cpus.usable} usable (affinity {cpus.affinity} of {cpus.host}, cgroup quota {quota}); "
        f"default threads: {threads}"
    )
    out.print(f"openvino      {report.openvino}")
    for note in report.notes:
        out.print(f"[yellow]note:[/] {note}")
    for problem in report.problems:
        out.print(f"[bold red]problem:[/] {problem}")


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
