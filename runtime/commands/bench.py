"""`bertx bench` and `bertx bench-serve`: side-by-side speed, memory and accuracy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bertx.errors import InputFileError, MissingDependencyError, OptionError

from .common import VARIANT_HELP, VariantChoice, app, err, ints, out, user_errors


@app.command()
@user_errors
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
        from bertx.bench.harness import run
        from bertx.bench.measuring import Settings
        from bertx.bench.report import engines_table, headline_table, write
    except ImportError as exc:
        raise MissingDependencyError(
            f"bertx bench needs the export extra ({exc.name}): pip install torch==2.13.0 && pip install 'bertx[export]'"
        ) from None
    if (artifact is None) == (preset is None):
        raise InputFileError("give an ARTIFACT folder or --preset NAME (one of them)")
    if preset is None and preset_int8 != "auto":
        raise OptionError("--preset-int8 applies only with --preset")
    if preset is not None:
        from bertx.bench.presets import preset_artifact

        artifact = preset_artifact(preset, Path("models"), int8_recipe=preset_int8)
    assert artifact is not None
    settings = Settings(
        batch_sizes=ints(batch_sizes, "--batch-sizes"),
        fixed_lengths=ints(lengths, "--lengths") if lengths.strip() else (),
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
@user_errors
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
    mixed_clients: Annotated[
        int, typer.Option(min=0, help="Clients of the level whose requests hold 1 … 64 texts (0: no such level).")
    ] = 32,
    infinity: Annotated[
        bool, typer.Option("--infinity/--no-infinity", help="Also load-test infinity-emb where it is installed.")
    ] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the JSON and markdown.")] = Path("bench/results"),
    name: Annotated[str | None, typer.Option(help="File stem of the results [serve-ARTIFACT-VARIANT].")] = None,
) -> None:
    """Load-test `bertx serve` on 127.0.0.1: concurrent clients sending real text, throughput, latency
    percentiles, errors, server memory and CPU per text, next to bertx in-process and infinity-emb."""
    import shlex

    try:
        from bertx.bench.load_results import LoadSettings
        from bertx.bench.serve_load import run
        from bertx.bench.serve_report import markdown, write
        from bertx.serving.server import require_extra
    except ImportError as exc:
        raise MissingDependencyError(
            f"bertx bench-serve needs the export and serve extras ({exc.name}): pip install 'bertx[export,serve]'"
        ) from None
    require_extra()
    settings = LoadSettings(
        clients=ints(clients, "--clients"),
        requests=requests,
        seconds=seconds,
        texts=texts,
        variant=variant.value,
        threads=threads,
        soak_seconds=soak,
        soak_clients=soak_clients,
        infinity=infinity,
        mixed_clients=mixed_clients,
    )
    with err.status("load testing …") as status:
        results = run(artifact, settings, progress=lambda message: status.update(message))
    command = "bertx bench-serve " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    sys.stdout.write(markdown(results, command))
    for path in write(results, out_dir, name or f"serve-{artifact.name}-{variant.value}", command):
        err.print(f"wrote {path}")
