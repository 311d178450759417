"""`bertx info`, `bertx verify` and `bertx doctor`: what an artifact holds and what this machine can run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bertx.display import int8_search_table, layer_table, parity_table, variants_table
from bertx.errors import ArtifactError
from bertx.manifest import MANIFEST_NAME, Manifest, Precision

from .common import app, out, user_errors


@app.command()
@user_errors
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
    from bertx.architectures import NOT_YET, SUPPORTED

    table = Table(title="Model types bertx exports (transformers' model_type)")
    for column in ("model_type", "family", "positions", "graph", "for example"):
        table.add_column(column)
    for kind in SUPPORTED.values():
        table.add_row(
            kind.name, kind.family, kind.positions.value, "unfused" if kind.unfused else "fused", kind.examples
        )
    out.print(table)
    out.print("Not supported yet:")
    for name, why in NOT_YET.items():
        out.print(f"  {name}: {why}", highlight=False)
    out.print("Any other type is refused at export with the list above.", highlight=False)


@app.command()
@user_errors
def verify(artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `bertx export`.")]) -> None:
    """Check every file of an artifact against the size and sha256 its manifest recorded at export."""
    from bertx.artifact import verify_artifact

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
@user_errors
def doctor() -> None:
    """Show versions, the execution providers that really load, OpenVINO, CPU features (AVX2, AVX-512, VNNI,
    BF16, AMX), the CPU class and INT8 preset they suit, and the CPUs this process may use."""
    from bertx.doctor import diagnose

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
