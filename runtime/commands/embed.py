"""`bertx embed`: texts to vectors, in this process or on Ray, from the one vocabulary of options."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from bertx import __version__
from bertx.batching import DEFAULT_BATCH_TOKENS
from bertx.compact import VectorPrecision
from bertx.errors import BertxError, InputFileError, MissingDependencyError, OptionError
from bertx.loading import LoadOptions
from bertx.options import CHUNKS, DEFAULTS, SENTENCE, SENTENCE_OPTIONS, SPEC, TOKENS, WORDS, EncodeOptions
from bertx.session import Device

from .common import VARIANT_HELP, DType, VariantChoice, app, err, option_help, out, parse_weights, user_errors


class EmbedEngine(str, Enum):
    """Where `bertx embed` runs: in this process, or on a Ray cluster over Parquet/JSONL files."""

    LOCAL = "local"
    RAY = "ray"


@app.command()
@user_errors
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
    id_field: Annotated[
        str | None,
        typer.Option(
            help=(
                "JSONL field / CSV column with ids [the line or row number; FILE:NUMBER when --engine ray "
                "reads several files]."
            )
        ),
    ] = None,
    pooling: Annotated[
        str | None, typer.Option(help=option_help("pooling", "Or none: token vectors (.jsonl)."))
    ] = None,
    layers: Annotated[str | None, typer.Option(help=option_help("layers"))] = None,
    combine: Annotated[str, typer.Option(help=option_help("combine"))] = DEFAULTS["combine"].value,
    layer_weights: Annotated[
        str | None, typer.Option(metavar="W1,W2,…", help=option_help("layer_weights", "Comma-separated."))
    ] = None,
    pool_before_combine: Annotated[
        bool, typer.Option("--pool-before-combine", help=option_help("pool_before_combine"))
    ] = False,
    normalize_embeddings: Annotated[
        bool | None,
        typer.Option(
            "--normalize-embeddings/--no-normalize-embeddings",
            "--normalize/--no-normalize",
            help=option_help("normalize_embeddings"),
        ),
    ] = None,
    long_texts: Annotated[str, typer.Option(help=option_help("long_texts"))] = DEFAULTS["long_texts"].value,
    chunk_overlap: Annotated[int, typer.Option(help=option_help("chunk_overlap"))] = DEFAULTS["chunk_overlap"],
    chunk_window: Annotated[int | None, typer.Option(help=option_help("chunk_window"))] = None,
    truncate_dim: Annotated[int | None, typer.Option(help=option_help("truncate_dim"))] = None,
    prompt_name: Annotated[str | None, typer.Option(help=option_help("prompt_name", "bertx info lists them."))] = None,
    prompt: Annotated[str | None, typer.Option(help=option_help("prompt"))] = None,
    words: Annotated[
        bool, typer.Option("--words", help="Write word vectors instead (see --merge), as .jsonl.")
    ] = False,
    merge: Annotated[str, typer.Option(help=option_help("merge", "With --words."))] = DEFAULTS["merge"].value,
    chunks: Annotated[
        bool,
        typer.Option(
            "--chunks", help="Late chunking: write each text's chunk vectors instead (see --chunk-size), .jsonl."
        ),
    ] = False,
    chunk_size: Annotated[int | None, typer.Option(help=option_help("chunk_size", "With --chunks."))] = None,
    hidden_states: Annotated[
        bool, typer.Option("--hidden-states", help="Write every hidden state per text (.npz), for analysis.")
    ] = False,
    dtype: Annotated[DType, typer.Option(help="Float type written to the output file.")] = DType.FLOAT32,
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
    from bertx.embedding_files import (
        check_output,
        write_chunks,
        write_hidden_states,
        write_tokens,
        write_vectors,
        write_words,
    )
    from bertx.inputs import Record, read_records
    from bertx.model import Model

    if words and chunks:
        raise OptionError("--words and --chunks write different things: give one of them")
    kind = CHUNKS if chunks else WORDS if words else TOKENS if pooling == "none" else SENTENCE
    given: dict[str, Any] = {
        "pooling": None if pooling == "none" else pooling,
        "layers": layers,
        "combine": combine,
        "layer_weights": None if layer_weights is None else parse_weights(layer_weights),
        "pool_before_combine": pool_before_combine,
        "normalize_embeddings": normalize_embeddings,
        "long_texts": long_texts,
        "chunk_overlap": chunk_overlap,
        "chunk_window": chunk_window,
        "truncate_dim": truncate_dim,
        "prompt_name": prompt_name,
        "prompt": prompt,
        "merge": merge,
        "chunk_size": chunk_size,
    }
    options = EncodeOptions.from_mapping(given, kind)
    compact = precision is not VectorPrecision.FLOAT32
    load = LoadOptions(variant.value, device, threads, allow_fallback, batch_tokens=batch_tokens, verify=verify)
    if engine is EmbedEngine.RAY:
        if kind not in (SENTENCE, CHUNKS) or hidden_states or compact or texts:
            raise OptionError(
                "--engine ray writes sentence vectors (or --chunks) of the --input files: no texts as arguments, "
                "--words, --pooling none, --hidden-states or --precision"
            )
        if input is None or output is None:
            raise OptionError("--engine ray needs --input (a folder, glob or file) and --output FOLDER")
        ray_job = {
            "artifact": str(artifact.resolve()),
            "output": output,
            "text_column": field,
            "id_column": id_field,
            "variant": variant.value,
            "device": None if device is None else device.value,
            "dtype": dtype.value,
            "shard_rows": shard_rows,
            "batch_size": batch_size,
            "batch_tokens": load.batch_tokens,
            "verify": verify,
            "kind": kind,
        }
        changed = {name: value for name, value in options.changed().items() if kind in SPEC[name].kinds}
        _embed_on_ray(ray_job, changed, input, address, workers, cpus_per_worker, gpus_per_worker)
        return
    if (compact or options != EncodeOptions()) and hidden_states:
        raise OptionError("--hidden-states writes every hidden state as it is: no encode options, no --precision")
    if compact and kind != SENTENCE:
        raise OptionError("--precision applies to sentence vectors, not word or token vectors")
    if keep_float and not compact:
        raise OptionError("--keep-float keeps float vectors beside quantized ones: give --precision too")
    if (output is not None or kind != SENTENCE or compact) and not hidden_states:
        check_output(output, words=kind != SENTENCE, precision=precision.value)
    records = [Record(str(i), t) for i, t in enumerate(texts or [])]
    if input is not None:
        records += read_records(input, field=field, column=column, id_field=id_field)
    if not records:
        raise InputFileError("nothing to embed: give texts as arguments or --input FILE (- for stdin)")
    model = Model.load(artifact, load)
    strings = [r.text for r in records]
    if hidden_states:
        if output is None or not output.lower().endswith(".npz"):
            raise InputFileError("--hidden-states writes one array per text: give --output FILE.npz")
        write_hidden_states(output, model.hidden_states(strings, batch_size=batch_size), records)
        return
    recipe = model.recipe(options, kind)
    show = input is not None and len(strings) > batch_size
    if kind == WORDS and output is not None:
        write_words(output, model.compute(strings, recipe, batch_size), records, dtype.value)  # type: ignore[arg-type]
        return
    if kind == CHUNKS and output is not None:
        write_chunks(output, model.compute(strings, recipe, batch_size), records, dtype.value)  # type: ignore[arg-type]
        return
    if kind == TOKENS and output is not None:
        write_tokens(output, model.compute(strings, recipe, batch_size), records, dtype.value)  # type: ignore[arg-type]
        return
    vectors = np.asarray(model.compute(strings, recipe, batch_size, show))
    exact, vectors = vectors, vectors.astype(dtype.value, copy=False)
    if output is not None:
        meta = {
            "artifact": str(artifact.resolve()),
            "variant": model.variant.precision.value,
            "bertx": __version__,
            **{name: value for name, value in options.to_dict().items() if name in SENTENCE_OPTIONS},
            "prompt_text": recipe.prefix,
        }
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
        from bertx.distributed import CorpusJob, embed_corpus
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
    from bertx.compact import calibration_ranges, quantize
    from bertx.embedding_files import write_vectors

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
