"""The INT8 step of an export: run the search (or the one named recipe), keep the chosen graph, and
say in the manifest what was measured, chosen and pruned."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bertx.backends import Backend, GraphFile
from bertx.cpu import CpuInfo

from .int8 import Candidate, Int8Context, Int8Options, calibration_facts, choose, time_passing_again
from .int8_recipes import named_recipe
from .int8_search import Search


def quantize_int8(
    context: Int8Context,
    cpu: CpuInfo,
    options: Int8Options,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[GraphFile, dict[str, Any]]:
    """Build INT8 candidates, measure them and return the chosen graph and the manifest settings.

    Raises:
        ExportError: a recipe failed to build, or no candidate met the target (without
            `allow_below_target`); the message holds the measured table.
    """
    started = time.perf_counter()
    search = Search(context, cpu, options, progress)
    if options.recipe == "auto":
        search.auto()
    else:
        search.fixed(options.recipe)
    final_round = time_passing_again(search.candidates, context, progress)
    chosen, path, methods = choose(search.candidates, options)
    _delete_unchosen(search, path)
    return path, _settings(search, chosen, path, methods, final_round, time.perf_counter() - started)


def _delete_unchosen(search: Search, path: GraphFile) -> None:
    for _, other, _ in search.candidates:
        if other.path != path.path:
            other.path.unlink(missing_ok=True)
            other.path.with_suffix(".bin").unlink(missing_ok=True)


def _settings(
    search: Search,
    chosen: Candidate,
    path: GraphFile,
    methods: dict[str, str],
    final_round: dict[str, Any] | None,
    seconds: float,
) -> dict[str, Any]:
    """What the manifest records of the search."""
    on_openvino = path.backend is Backend.OPENVINO
    smoothed, split, units = 0, 0, 0
    if not on_openvino:
        recipe = named_recipe(chosen.recipe, search.cpu)
        units = recipe.outlier_units
        smoothed, split = search.prepared_counts(recipe)
    context, cpu, options = search.context, search.cpu, search.options
    return {
        "tool": "nncf (OpenVINO)" if on_openvino else "onnxruntime.quantization",
        "backend": path.backend.value,
        "mode": "auto" if options.recipe == "auto" else "fixed",
        "recipe": chosen.recipe,
        "description": chosen.description,
        "preset": cpu.int8_preset,
        "cpu_class": cpu.cpu_class,
        "chosen_for_cpu": cpu.model,
        "cpu_features": {key: value for key, value in asdict(cpu).items() if key != "model"},
        "target_cosine": options.target_cosine,
        "meets_target": chosen.meets_target,
        "held_out": {
            "texts": context.proof.texts,
            "reference": "PyTorch fp32",
            "embedded": "in the runtime's batches and one at a time",
        },
        "calibration": calibration_facts(options.calibration_file, context.calibration),
        "smoothed_inputs": smoothed,
        "outlier_units": {"per_block": units, "blocks": split},
        "fp32_texts_per_s": round(search.fp32_speed, 1) if search.timed else None,
        "final_round": final_round,
        "candidates": [asdict(c) for c, _, _ in search.candidates],
        "failed_recipes": search.failed,
        "pruned": search.pruned,
        "nodes": methods,
        "sensitivity": {name: round(loss, 6) for name, loss in search.ranking},
        "openvino_sensitivity": {" + ".join(group): round(gain, 6) for group, gain in search.openvino_ranking},
        "search_seconds": round(seconds, 1),
    }


def timed_by_recommendation(quant: dict[str, Any], texts_per_s: dict[str, float], rounds: int) -> dict[str, Any]:
    """A named recipe's settings with the speeds the recommendation measured side by side (fp32's and its
    own), for a candidate the INT8 step proved but did not time; other settings come back as they were."""
    fp32, int8 = texts_per_s.get("fp32"), texts_per_s.get("int8")
    if quant["mode"] != "fixed" or not fp32 or not int8:
        return quant
    candidates = [
        {**c, "texts_per_s": int8, "speedup": round(int8 / fp32, 3), "timed_again": True}
        if c["recipe"] == quant["recipe"]
        else c
        for c in quant["candidates"]
    ]
    final_round = {"fp32_texts_per_s": fp32, "rounds": rounds, "candidates": 1, "timed_by": "recommendation"}
    return {**quant, "fp32_texts_per_s": fp32, "final_round": final_round, "candidates": candidates}
