"""What an export writes besides the graphs: the tokenizer, the facts of the export (versions, CPU, opset),
and the summary it prints."""

from __future__ import annotations

import datetime as dt
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bertx.artifact import sha256_file
from bertx.cpu import cpu_info
from bertx.display import layer_table, parity_table, variants_table
from bertx.errors import UnsupportedModelError
from bertx.manifest import Manifest, TokenizerInfo

from .onnx_export import quiet


def write_tokenizer(model_dir: Path, path: Path) -> TokenizerInfo:
    """Save the model's fast tokenizer without its own padding/truncation (the runtime sets both)."""
    from transformers import AutoTokenizer

    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnsupportedModelError(f"cannot load a tokenizer from {model_dir}: {exc}") from exc
    if not tokenizer.is_fast:
        raise UnsupportedModelError(f"{model_dir} has no fast (tokenizers) tokenizer; bertx needs tokenizer.json")
    if tokenizer.pad_token_id is None:
        raise UnsupportedModelError(f"the tokenizer of {model_dir} defines no padding token")
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(path))
    return TokenizerInfo(
        file=path.name,
        sha256=sha256_file(path),
        vocab_size=backend.get_vocab_size(with_added_tokens=True),
        pad_token=str(tokenizer.pad_token),
        pad_token_id=int(tokenizer.pad_token_id),
    )


def export_facts(exported: Path, optimize: str, validated: bool) -> dict[str, Any]:
    import onnx

    opset = next(
        (
            o.version
            for o in onnx.load(str(exported), load_external_data=False).opset_import
            if o.domain in ("", "ai.onnx")
        ),
        None,
    )
    versions: dict[str, str | None] = {}
    for package in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "openvino", "nncf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cpu = cpu_info()
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": {"model": cpu.model, "class": cpu.cpu_class, "flags": cpu.flags_key},
        "opset": opset,
        "optimize": optimize,
        "validated": validated,
        "versions": versions,
    }


def print_summary(console: Console, target: Path, manifest: Manifest, timings: dict[str, float]) -> None:
    steps = Table(title="Steps")
    steps.add_column("step")
    steps.add_column("time", justify="right")
    for name, seconds in timings.items():
        steps.add_row(name, f"{seconds:.1f}s")
    steps.add_row("[bold]total[/]", f"[bold]{sum(timings.values()):.1f}s[/]")
    console.print(steps)
    console.print(variants_table(manifest))
    reports = {p.value: v.parity for p, v in manifest.variants.items()}
    checked = {name: report for name, report in reports.items() if report is not None}
    if checked:
        console.print(layer_table(checked))
    console.print(parity_table(reports))
    console.print(f"[bold green]artifact written to {target}[/]")
