"""`bertx search` and `bertx similarity`: embeddings files searched, a few texts compared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from bertx.compact import DEFAULT_RESCORE_MULTIPLIER, VectorPrecision
from bertx.errors import InputFileError
from bertx.options import SENTENCE_OPTIONS
from bertx.similarity import Metric

from .common import VARIANT_HELP, VariantChoice, app, err, option_help, out, user_errors


@app.command()
@user_errors
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
    from bertx.embedding_files import read_npz
    from bertx.model import Model
    from bertx.similarity import top_k

    data = read_npz(embeddings)
    source = artifact or Path(str(data.meta.get("artifact", "")))
    model = Model.from_pretrained(source, variant=str(data.meta.get("variant", "fp32")))
    # The file's settings, except its prompt: queries get their own (encode_query's, or the one given here).
    settings = {key: data.meta[key] for key in SENTENCE_OPTIONS if data.meta.get(key) is not None}
    settings.update(prompt_name=prompt_name, prompt=prompt)
    vectors = np.asarray(model.encode_query(list(queries), **settings))
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
    from bertx.compact import search

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
@user_errors
def similarity(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to compare with each other.")],
    metric: Annotated[Metric, typer.Option(help="Score.")] = Metric.COSINE,
    pooling: Annotated[str | None, typer.Option(help=option_help("pooling"))] = None,
    layers: Annotated[str | None, typer.Option(help=option_help("layers"))] = None,
    variant: Annotated[VariantChoice, typer.Option(help=VARIANT_HELP)] = VariantChoice.FP32,
) -> None:
    """Print the similarity (or distance) matrix of a few texts."""
    from bertx.model import Model
    from bertx.similarity import pairwise

    model = Model.from_pretrained(artifact, variant=variant)
    scores = pairwise(np.asarray(model.encode(list(texts), pooling=pooling, layers=layers)), metric=metric)
    for i, text in enumerate(texts):
        out.print(f"[{i}] {text}")
    table = Table(title=f"{metric.value} ({model.variant.precision.value})")
    table.add_column("")
    for i in range(len(texts)):
        table.add_column(f"[{i}]", justify="right")
    for i, row in enumerate(scores):
        table.add_row(f"[{i}]", *(f"{x:.3f}" for x in row))
    out.print(table)
