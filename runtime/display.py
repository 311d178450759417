"""Rich tables shared by `bertx export` and `bertx info`."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from .manifest import Manifest, ParityReport, Variant


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def parity_table(variants: dict[str, ParityReport | None]) -> Table:
    """Per-variant parity against PyTorch fp32: worst layer error, cosines, thresholds, verdict."""
    table = Table(title="Parity against PyTorch fp32 (real text, real tokens only)")
    table.add_column("variant")
    heads = any(report is not None and report.head is not None for report in variants.values())
    pooled = any(report is not None and report.sentence_embedding is not None for report in variants.values())
    columns = (
        ("max abs", "at", "min cos", "mean cos")
        + (("logits abs", "same label") if heads else ())
        + (("in-graph cos",) if pooled else ())
        + ("needs",)
    )
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("result")
    for name, report in variants.items():
        if report is None:
            table.add_row(name, *("-" for _ in columns), "[yellow]not validated[/]")
            continue
        limits = report.thresholds
        needs = f"cos≥{limits.min_cosine:g}" + (f" abs≤{limits.max_abs:g}" if limits.max_abs is not None else "")
        worst = max(report.layers, key=lambda layer: layer.max_abs)
        verdict = "[green]pass[/]" if report.passed else "[red]FAIL[/]"
        if report.nonfinite:
            verdict += " [red]NaN/Inf[/]"
        head = report.head
        logits = () if not heads else ("-", "-") if head is None else (f"{head.max_abs:.1e}", f"{head.agreement:.1%}")
        graph = report.sentence_embedding
        in_graph = () if not pooled else ("-",) if graph is None else (f"{graph.cosine_min:.6f}",)
        table.add_row(
            name,
            f"{worst.max_abs:.1e}",
            worst.name.replace("hidden_states", "hs"),
            f"{report.cosine_min:.6f}",
            f"{report.cosine_mean:.6f}",
            *logits,
            *in_graph,
            needs,
            verdict,
        )
    return table


def layer_table(variants: dict[str, ParityReport]) -> Table:
    """Max abs error per hidden state, one column per variant."""
    table = Table(title="Max abs error per hidden state")
    table.add_column("output")
    for name in variants:
        table.add_column(name, justify="right")
    reports = list(variants.values())
    if reports:
        for i, layer in enumerate(reports[0].layers):
            table.add_row(layer.name, *(f"{r.layers[i].max_abs:.2e}" for r in reports))
    return table


def variants_table(manifest: Manifest) -> Table:
    """Files of an artifact with their size and how each was made."""
    notes = [note for note in (head_summary(manifest), _pooled_summary(manifest)) if note]
    table = Table(title="Variants", caption="\n".join(notes) or None)
    for column in ("variant", "file", "size", "runs on", "made with"):
        table.add_column(column)
    for precision, variant in manifest.variants.items():
        size = variant.size_bytes + sum(int(f.get("size_bytes", 0)) for f in variant.extra_files.values())
        table.add_row(precision.value, variant.file, _size(size), _engine(variant), _how(variant))
    return table


def head_summary(manifest: Manifest) -> str | None:
    """One line on the task head of a fine-tuned artifact, or None for a bare encoder."""
    head = manifest.head
    if head is None:
        return None
    shown = ", ".join(head.labels[:8]) + (f", … ({len(head.labels)} in all)" if len(head.labels) > 8 else "")
    return f"task head: {head.kind.value}, {head.problem_type.value}, output {head.output!r}, labels: {shown}"


def _pooled_summary(manifest: Manifest) -> str | None:
    pooled = manifest.sentence_embedding
    if pooled is None:
        return None
    unit = ", L2-normalized" if pooled.normalize else ""
    return f"output {pooled.output!r}: {pooled.pooling.value} pooling{unit}, in {', '.join(pooled.files)}"


def _engine(variant: Variant) -> str:
    """The engine a variant needs, as `device=` names it."""
    if variant.backend == "openvino":
        return f"OpenVINO {variant.inference_precision or 'f32'} (device openvino, bertx\\[openvino])"
    return "onnxruntime (any device)"


def _how(variant: Variant) -> str:
    opt = variant.optimization
    text = "unfused" if opt.get("level") == "unfused" else f"fusion {opt.get('level', '?')}"
    if opt.get("fp16"):
        text += ", fp16 weights and compute (fp32 I/O)"
    quant = variant.quantization
    if quant and "recipe" in quant:
        text += f", int8 {quant['recipe']} ({quant.get('description', '')}), chosen for {quant.get('preset', '?')}"
    elif quant:
        channel = "per-channel" if quant.get("per_channel") else "per-tensor"
        text += f", int8 {quant.get('mode', '')} {channel}, preset {quant.get('preset', '?')}"
    return text


def int8_search_table(variant: Variant) -> Table | None:
    """The INT8 candidates measured at export: held-out accuracy against PyTorch and speed."""
    quant = variant.quantization or {}
    candidates = quant.get("candidates")
    if candidates:
        return _candidates_table(quant, candidates)
    tries = quant.get("search")
    if not tries:
        return None
    table = Table(title=f"INT8 search on calibration text (goal: min cosine ≥ {quant.get('calibration_goal')})")
    for column in ("fp32 nodes", "int8 nodes", "min cos", "mean cos", "kept"):
        table.add_column(column, justify="right")
    total = int(quant.get("quantized_nodes", 0)) + len(quant.get("fp32_nodes", []))
    for i, attempt in enumerate(tries):
        kept = "[green]✓[/]" if i == len(tries) - 1 else ""
        table.add_row(
            str(attempt["fp32_nodes"]),
            str(total - int(attempt["fp32_nodes"])),
            f"{attempt['cosine_min']:.4f}",
            f"{attempt['cosine_mean']:.4f}",
            kept,
        )
    return table


def _candidates_table(quant: dict[str, Any], candidates: list[dict[str, Any]]) -> Table:
    features = quant.get("cpu_features", {})
    cpu_class = quant.get("cpu_class") or f"{quant.get('preset', '?')}, VNNI {features.get('vnni', '?')}"
    cpu = f"{quant.get('chosen_for_cpu', '?')}, {cpu_class}"
    held_out = quant.get("held_out", {}).get("texts", "?")
    final = quant.get("final_round")
    if final and final.get("timed_by") == "recommendation":
        speed = f"speed on {cpu}: * timed side by side with fp32 ({final['fp32_texts_per_s']} texts/s) by the export"
    elif quant.get("fp32_texts_per_s") is None:
        speed = f"not timed on {cpu} (the export ran no recommendation)"
    else:
        again = f"; * timed again side by side with fp32 at {final['fp32_texts_per_s']} texts/s" if final else ""
        speed = f"speed on {cpu} (fp32: {quant.get('fp32_texts_per_s')} texts/s{again})"
    heading = "INT8 search" if quant.get("mode") != "fixed" else f"INT8 recipe {quant.get('recipe')}"
    table = Table(
        title=f"{heading}: min cosine ≥ {quant.get('target_cosine')} vs PyTorch on {held_out} held-out texts "
        f"(batched and alone), {speed}"
    )
    for column in (
        "recipe",
        "engine",
        "int8 / blockwise / accurate nodes",
        "min cos",
        "mean cos",
        "batch-invariant",
        "texts/s",
        "× fp32",
        "chosen",
    ):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    for c in candidates:
        style = "" if c["meets_target"] else "dim"
        table.add_row(
            c["recipe"],
            "OpenVINO" if c.get("backend") == "openvino" else "onnxruntime",
            f"{c['int8_nodes']} / {c['blockwise_nodes']} / {c['fp32_nodes']}",
            f"{c['cosine_min']:.4f}",
            f"{c['cosine_mean']:.4f}",
            f"{c['invariance_min']:.4f}" if c.get("invariance_min") is not None else "—",
            f"{c['texts_per_s']:.1f}{'*' if c.get('timed_again') else ''}" if c["texts_per_s"] else "not timed",
            f"{c['speedup']:.2f}×" if c["texts_per_s"] else "—",
            "[green]✓[/]" if c["recipe"] == quant.get("recipe") else "",
            style=style,
        )
    return table
