"""INT8 for the CPU it runs on, chosen by measurement: `bertx export MODEL --int8 [auto|RECIPE]`.

ONNX Runtime's fastest INT8 (dynamic, one scale per activation tensor) loses accuracy on BERT: a few
outlier channels and tokens set the scale for the whole batch. Which fix is cheapest depends on the
model and on the CPU's kernels, so `auto` measures instead of guessing:

1. every fixed recipe that suits the CPU (`int8_recipes.recipes_for`) is built and measured;
2. the `mixed` ladder: each node's end-to-end sensitivity is measured on the calibration text (the
   smoothed, split graph with only that node quantized), then the k most sensitive nodes are made
   accurate (blockwise INT8, or fp32 for a fused Attention) for growing k until the target is met,
   then the gap below the first k that passes is bisected;
3. every candidate's accuracy is its min and mean cosine against PyTorch fp32 on held-out real text
   (the parity sentences, never the calibration text), and its speed is texts/s on the same machine
   in the same run; the candidates that meet the target are timed again side by side with fp32, pass
   by pass in turn, and the fastest is kept.

The whole table, the CPU it was measured on and the sensitivities go into the manifest.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bertx.artifact import sha256_file
from bertx.backends import Backend, GraphFile, open_graph
from bertx.cpu import CpuInfo
from bertx.errors import ExportError, InputFileError
from bertx.manifest import Defaults
from bertx.pooling import cosine_rows, pool
from bertx.tokenization import Batch, TextEncoder

from .int8_openvino import MAX_MIXED_NODES, OpenVINORecipe
from .int8_openvino import build as openvino_build
from .int8_openvino import ladder as openvino_ladder
from .int8_openvino import mixed as openvino_mixed
from .int8_openvino import named as openvino_named
from .int8_openvino import recipes_for as openvino_recipes
from .int8_openvino import unavailable as openvino_unavailable
from .int8_recipes import NodeMethod, Recipe, build, mixed_recipe, named_recipe, node_methods, recipes_for
from .onnx_export import quiet
from .outliers import split_outlier_units
from .smoothing import quantizable_nodes, smooth

DEFAULT_TARGET = 0.995
_BATCH = 16
_SPEED_BATCH = 32
_SPEED_REPEATS = 3
_FINAL_ROUNDS = 5


def calibration_texts(path: Path | None = None) -> list[str]:
    """Calibration text: the built-in real sentences (never the parity text), or one text per line of `path`.

    Raises:
        InputFileError: the file is missing, unreadable or has fewer than 8 non-empty lines.
    """
    if path is None:
        data = resources.files("bertx.exporter").joinpath("data/calibration_sentences.txt").read_text(encoding="utf-8")
        return [line for line in data.splitlines() if line.strip()]
    try:
        data = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot read --calibration-file {path}: {exc}") from exc
    texts = [line for line in data.splitlines() if line.strip()]
    if len(texts) < 8:
        raise InputFileError(f"--calibration-file {path} has {len(texts)} non-empty lines; give at least 8 texts")
    return texts


@dataclass(frozen=True)
class Int8Options:
    """What `bertx export --int8` was asked for."""

    recipe: str = "auto"
    target_cosine: float = DEFAULT_TARGET
    allow_below_target: bool = False
    calibration_file: Path | None = None
    # Which engines `auto` may pick from: onnxruntime, openvino, or both (deploy where you serve).
    engines: tuple[Backend, ...] = (Backend.ONNXRUNTIME, Backend.OPENVINO)


@dataclass(frozen=True)
class Candidate:
    """One measured INT8 graph: held-out accuracy against PyTorch and speed on this machine."""

    recipe: str
    description: str
    cosine_min: float
    cosine_mean: float
    texts_per_s: float
    speedup: float
    meets_target: bool
    fp32_nodes: int
    blockwise_nodes: int
    int8_nodes: int
    timed_again: bool = False
    backend: str = "onnxruntime"


@dataclass(frozen=True)
class Int8Context:
    """The inputs every candidate shares: graph, texts, references and how to run them."""

    fused: Path
    exported: Path  # the plain (unfused) export, which NNCF quantizes for OpenVINO
    work_dir: Path
    input_names: tuple[str, ...]
    last_output: str
    defaults: Defaults
    calibration: tuple[Batch, ...]
    held_out: tuple[Batch, ...]
    reference: np.ndarray  # PyTorch fp32 pooled vectors of the held-out batches, in batch order
    speed: tuple[Batch, ...]


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
    import onnx

    started = time.perf_counter()
    typed = _typed(context.fused, context.work_dir)
    fp32_speed = _throughput(GraphFile(context.fused), context)
    base = onnx.load(str(typed))
    prepared: dict[tuple[float | None, int], Path] = {}
    prepared_counts: dict[tuple[float | None, int], tuple[int, int]] = {}
    candidates: list[tuple[Candidate, GraphFile, dict[str, str]]] = []
    ranking: list[tuple[str, float]] = []
    failed_recipes: dict[str, str] = {}

    def source_graph(recipe: Recipe) -> Path:
        """The graph `recipe` quantizes: the typed one, smoothed and/or split as it says (built once)."""
        key = (recipe.smooth_alpha, recipe.outlier_units)
        if key == (None, 0):
            return typed
        if key not in prepared:
            model, smoothed, split = base, 0, 0
            if recipe.smooth_alpha is not None:
                model, smoothed = smooth(model, context.calibration, context.input_names, recipe.smooth_alpha)
            if recipe.outlier_units:
                model, split = split_outlier_units(
                    model, context.calibration, context.input_names, recipe.outlier_units
                )
            prepared[key] = context.work_dir / f"int8-prepared-{len(prepared)}.onnx"
            prepared_counts[key] = (smoothed, split)
            onnx.save(model, str(prepared[key]))
        return prepared[key]

    def measure(recipe: Recipe, order: Sequence[str] = ()) -> Candidate:
        source = source_graph(recipe)
        methods = node_methods(base, recipe, order)
        out = context.work_dir / f"int8-{recipe.name}.onnx"
        build(recipe, source, methods, out, context.calibration, context.input_names)
        return record(recipe.name, recipe.describe(), GraphFile(out), methods)

    def measure_openvino(recipe: OpenVINORecipe, ranked: Sequence[Sequence[str]] = ()) -> Candidate:
        out = context.work_dir / f"int8-{recipe.name}.xml"
        graph, int8, accurate = openvino_build(
            recipe, context.exported, out, context.calibration, context.input_names, cpu, ranked
        )
        methods = {"int8 MatMuls": str(int8), "accurate MatMuls": str(accurate), "precision": str(graph.precision)}
        return record(recipe.name, recipe.describe(), graph, methods, (accurate, 0, int8))

    def record(
        name: str,
        description: str,
        graph: GraphFile,
        methods: dict[str, Any],
        counted: tuple[int, int, int] | None = None,
    ) -> Candidate:
        cosines = _held_out_cosines(graph, context)
        speed = _throughput(graph, context)
        counts = {method: sum(1 for m in methods.values() if m is method) for method in NodeMethod}
        fp32_nodes, blockwise_nodes, int8_nodes = counted or (
            counts[NodeMethod.FP32],
            counts[NodeMethod.BLOCKWISE],
            counts[NodeMethod.DYNAMIC] + counts[NodeMethod.STATIC],
        )
        candidate = Candidate(
            recipe=name,
            description=description,
            cosine_min=round(float(cosines.min()), 6),
            cosine_mean=round(float(cosines.mean()), 6),
            texts_per_s=round(speed, 1),
            speedup=round(speed / fp32_speed, 3),
            meets_target=float(cosines.min()) >= options.target_cosine,
            fp32_nodes=fp32_nodes,
            blockwise_nodes=blockwise_nodes,
            int8_nodes=int8_nodes,
            backend=graph.backend.value,
        )
        plain = {key: m.value if isinstance(m, NodeMethod) else str(m) for key, m in methods.items()}
        candidates.append((candidate, graph, plain))
        progress(
            f"int8: {name:<20} min cos {candidate.cosine_min:.4f}  mean {candidate.cosine_mean:.4f}  "
            f"{candidate.texts_per_s:7.1f} texts/s ({candidate.speedup:.2f}× fp32)"
        )
        return candidate

    if options.recipe == "auto" and Backend.ONNXRUNTIME in options.engines:
        for recipe in recipes_for(cpu):
            try:
                measure(recipe)
            except ExportError as exc:
                # A quantizer that fails on this graph (a calibration histogram without a finite range, say)
                # leaves the other candidates to choose from; a fixed recipe that fails still stops the export.
                failed_recipes[recipe.name] = str(exc)
                progress(f"int8: {recipe.name:<20} skipped: {exc}")
        ranking = _sensitivity(base, source_graph(mixed_recipe(cpu, 0)), context, cpu, progress)
        order = [name for name, _ in ranking]
        failed = 0
        for k in _ladder(len(order)):
            if measure(mixed_recipe(cpu, k), order).meets_target:
                # The ladder's steps widen past 8 nodes; bisect the gap for the fewest that still pass.
                passed = k
                while passed - failed > 1:
                    middle = (failed + passed) // 2
                    if measure(mixed_recipe(cpu, middle), order).meets_target:
                        passed = middle
                    else:
                        failed = middle
                break
            failed = k
    if options.recipe == "auto" and Backend.OPENVINO in options.engines:
        skipped = openvino_unavailable(cpu)
        if skipped is not None:
            progress(f"int8: OpenVINO candidates skipped: {skipped}")
        for ov_recipe in openvino_recipes(cpu):
            measure_openvino(ov_recipe)
        if skipped is None and not any(c.meets_target and c.backend == "openvino" for c, _, _ in candidates):
            # No fixed recipe passed: leave the most sensitive nodes out of INT8 one by one (bf16 where the
            # CPU has it), as the onnxruntime ladder does; the first that passes is the fastest of them.
            if not ranking:
                ranking = _sensitivity(base, source_graph(mixed_recipe(cpu, 0)), context, cpu, progress)
            ranked = openvino_ladder(context.exported, context.fused, [name for name, _ in ranking])
            for k in range(1, min(MAX_MIXED_NODES, len(ranked)) + 1):
                if measure_openvino(openvino_mixed(k), ranked).meets_target:
                    break
    if options.recipe == "auto":
        if not candidates:
            failures = "; ".join(f"{name}: {why}" for name, why in failed_recipes.items())
            raise ExportError(
                f"--int8 auto could build no candidate ({failures})"
                if failed_recipes
                else "--int8 auto found no candidate it could build: OpenVINO is not usable here and the search "
                "was limited to it (--int8-engine openvino); install it or allow onnxruntime"
            )
    elif (fixed := openvino_named(options.recipe)) is not None:
        groups: list[list[str]] = []
        if fixed.accurate_nodes:
            ranking = _sensitivity(base, source_graph(mixed_recipe(cpu, 0)), context, cpu, progress)
            groups = openvino_ladder(context.exported, context.fused, [name for name, _ in ranking])
        measure_openvino(fixed, groups)
    else:
        recipe = named_recipe(options.recipe, cpu)
        if recipe.mode == "mixed":
            ranking = _sensitivity(base, source_graph(mixed_recipe(cpu, 0)), context, cpu, progress)
        measure(recipe, [name for name, _ in ranking])

    final_round = _time_passing_again(candidates, context, progress)
    chosen, path, methods = _choose(candidates, options)
    on_openvino = path.backend is Backend.OPENVINO
    chosen_key: tuple[float | None, int] = (None, 0)
    if not on_openvino:
        chosen_recipe = named_recipe(chosen.recipe, cpu)
        chosen_key = (chosen_recipe.smooth_alpha, chosen_recipe.outlier_units)
    outlier_units = chosen_key[1]
    for _, other, _ in candidates:
        if other.path != path.path:
            other.path.unlink(missing_ok=True)
            other.path.with_suffix(".bin").unlink(missing_ok=True)
    settings = {
        "tool": "nncf (OpenVINO)" if on_openvino else "onnxruntime.quantization",
        "backend": path.backend.value,
        "mode": "auto" if options.recipe == "auto" else "fixed",
        "recipe": chosen.recipe,
        "description": chosen.description,
        "preset": cpu.int8_preset,
        "chosen_for_cpu": cpu.model,
        "cpu_features": {"machine": cpu.machine, "avx2": cpu.avx2, "avx512": cpu.avx512, "vnni": cpu.vnni},
        "target_cosine": options.target_cosine,
        "meets_target": chosen.meets_target,
        "held_out": {"texts": int(sum(b.input_ids.shape[0] for b in context.held_out)), "reference": "PyTorch fp32"},
        "calibration": _calibration_facts(options.calibration_file, context.calibration),
        "smoothed_inputs": prepared_counts.get(chosen_key, (0, 0))[0],
        "outlier_units": {
            "per_block": outlier_units,
            "blocks": prepared_counts.get(chosen_key, (0, 0))[1],
        },
        "fp32_texts_per_s": round(fp32_speed, 1),
        "final_round": final_round,
        "candidates": [asdict(c) for c, _, _ in candidates],
        "failed_recipes": failed_recipes,
        "nodes": methods,
        "sensitivity": {name: round(loss, 6) for name, loss in ranking},
        "search_seconds": round(time.perf_counter() - started, 1),
    }
    return path, settings


def _choose(
    candidates: Sequence[tuple[Candidate, GraphFile, dict[str, str]]], options: Int8Options
) -> tuple[Candidate, GraphFile, dict[str, str]]:
    passing = [entry for entry in candidates if entry[0].meets_target]
    if passing:
        return max(passing, key=lambda entry: entry[0].texts_per_s)
    best = max(candidates, key=lambda entry: (entry[0].cosine_min, entry[0].cosine_mean))
    if options.allow_below_target:
        return best
    table = "; ".join(f"{c.recipe}: min {c.cosine_min:.4f} mean {c.cosine_mean:.4f}" for c, _, _ in candidates)
    raise ExportError(
        f"no INT8 candidate reached min cosine {options.target_cosine} against PyTorch on held-out text "
        f"(best: {best[0].recipe} at {best[0].cosine_min:.4f}; {table}). Lower --int8-target-cosine, "
        "pass --allow-below-target to keep the most accurate one, or export without --int8"
    )


def _ladder(nodes: int) -> list[int]:
    """How many of the most sensitive nodes to make accurate at each step: 1 … 8 one by one, then ×1.25."""
    steps, k = [], 1
    while k <= nodes:
        steps.append(k)
        k = k + 1 if k < 8 else int(k * 1.25)
    if steps and steps[-1] != nodes:
        steps.append(nodes)
    return steps


def _sensitivity(
    base: Any, source: Path, context: Int8Context, cpu: CpuInfo, progress: Callable[[str], None]
) -> list[tuple[str, float]]:
    """Each node's end-to-end loss (1 - min cosine on the calibration text, against `source`, the fp32
    graph the mixed recipes start from) with only that node dynamically quantized; most harmful first."""
    reference = _pooled(GraphFile(source), context.calibration, context)
    recipe = mixed_recipe(cpu, 0)
    names = [node.name for node in quantizable_nodes(base)]
    losses = {}
    progress(f"int8: measuring the sensitivity of {len(names)} nodes, one at a time")
    for i, name in enumerate(names):
        out = context.work_dir / f"int8-only{i}.onnx"
        build(recipe, source, {name: NodeMethod.DYNAMIC}, out, context.calibration, context.input_names)
        pooled = _pooled(GraphFile(out), context.calibration, context)
        losses[name] = 1.0 - float(np.concatenate([cosine_rows(g, r) for g, r in zip(pooled, reference)]).min())
        out.unlink(missing_ok=True)
    return sorted(losses.items(), key=lambda item: -item[1])


def _typed(fused: Path, work_dir: Path) -> Path:
    """The fused graph with every tensor's type annotated, as ORT's quantizers need."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # onnx's shape inference cannot see through fused com.microsoft ops (Attention,
    # SkipLayerNormalization) and the quantizer stops with "Unable to find data type"; ORT's symbolic
    # shape inference knows them.
    try:
        with quiet():
            typed = SymbolicShapeInference.infer_shapes(onnx.load(str(fused)), auto_merge=True)
    except Exception as exc:  # the shape inference script raises assorted errors on unusual graphs
        raise ExportError(f"symbolic shape inference failed on the fused graph ({exc}); try --optimize O1") from exc
    if typed is None:
        raise ExportError("symbolic shape inference failed on the fused graph; try --optimize O1")
    path = work_dir / "int8-typed.onnx"
    onnx.save(typed, str(path))
    return path


def _pooled(path: GraphFile, batches: Sequence[Batch], context: Int8Context) -> list[np.ndarray]:
    session = open_graph(path)
    outputs = [context.last_output]
    return [
        pool(session.run(outputs, b.feeds(context.input_names))[0], b.mask, context.defaults.pooling) for b in batches
    ]


def _held_out_cosines(path: GraphFile, context: Int8Context) -> np.ndarray:
    got = np.concatenate(_pooled(path, context.held_out, context))
    cosines: np.ndarray = np.nan_to_num(cosine_rows(got, context.reference), nan=-1.0)
    return cosines


def _throughput(path: GraphFile, context: Int8Context) -> float:
    """Texts per second on the speed batches: one warm-up pass, then the median of timed passes."""
    return _alternating_throughput([path], context, _SPEED_REPEATS)[0]


def _alternating_throughput(paths: Sequence[GraphFile], context: Int8Context, rounds: int) -> list[float]:
    """Texts per second of each graph: one warm-up pass each, then `rounds` rounds that time one pass of
    every graph in turn, so a machine that speeds up or slows down meanwhile favours none of them."""
    sessions = [open_graph(path) for path in paths]
    feeds = [batch.feeds(context.input_names) for batch in context.speed]
    texts = sum(batch.input_ids.shape[0] for batch in context.speed)
    outputs = [context.last_output]

    def one_pass(session: Any) -> float:
        start = time.perf_counter()
        for feed in feeds:
            session.run(outputs, feed)
        return time.perf_counter() - start

    for session in sessions:
        one_pass(session)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for session, timed in zip(sessions, times):
            timed.append(one_pass(session))
    return [float(texts / statistics.median(timed)) for timed in times]


def _time_passing_again(
    candidates: list[tuple[Candidate, GraphFile, dict[str, str]]], context: Int8Context, progress: Callable[[str], None]
) -> dict[str, Any] | None:
    """Candidates are timed minutes apart, and a 2-core machine drifts by more than the gap between two
    close candidates; so fp32 and every candidate that meets the target are timed again side by side
    before the fastest is picked. Their rows are updated in place; returns what the manifest records."""
    passing = [i for i, (candidate, _, _) in enumerate(candidates) if candidate.meets_target]
    if len(passing) < 2:
        return None
    progress(f"int8: timing fp32 and the {len(passing)} candidates that meet the target again, side by side")
    graphs = [GraphFile(context.fused)] + [candidates[i][1] for i in passing]
    speeds = _alternating_throughput(graphs, context, _FINAL_ROUNDS)
    for i, speed in zip(passing, speeds[1:]):
        candidate, path, methods = candidates[i]
        again = replace(candidate, texts_per_s=round(speed, 1), speedup=round(speed / speeds[0], 3), timed_again=True)
        candidates[i] = (again, path, methods)
        progress(f"int8: {candidate.recipe:<20} {again.texts_per_s:7.1f} texts/s ({again.speedup:.2f}× fp32)")
    return {"fp32_texts_per_s": round(speeds[0], 1), "rounds": _FINAL_ROUNDS, "candidates": len(passing)}


def _calibration_facts(path: Path | None, batches: Sequence[Batch]) -> dict[str, Any]:
    texts = int(sum(b.input_ids.shape[0] for b in batches))
    if path is None:
        return {"source": "built-in", "texts": texts}
    digest = sha256_file(Path(path))
    return {"source": str(path), "sha256": digest, "texts": texts}


def make_context(
    fused: Path,
    exported: Path,
    work_dir: Path,
    encoder: TextEncoder,
    input_names: Sequence[str],
    last_output: str,
    defaults: Defaults,
    source_path: Path,
    held_out_texts: Sequence[str],
    calibration_file: Path | None,
) -> Int8Context:
    """Tokenize the calibration, held-out and speed texts and compute the PyTorch reference."""
    calibration = _batches(encoder, calibration_texts(calibration_file), _BATCH)
    held_out = _batches(encoder, held_out_texts, _BATCH)
    speed = _batches(encoder, [*held_out_texts, *calibration_texts(None)], _SPEED_BATCH)
    reference = np.concatenate(_torch_pooled(source_path, held_out, input_names, defaults))
    work_dir.mkdir(parents=True, exist_ok=True)
    return Int8Context(
        fused, exported, work_dir, tuple(input_names), last_output, defaults, calibration, held_out, reference, speed
    )


def _batches(encoder: TextEncoder, texts: Sequence[str], size: int) -> tuple[Batch, ...]:
    encodings = encoder.encode(list(texts))
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
    return tuple(encoder.pad([encodings[i] for i in order[s : s + size]]) for s in range(0, len(order), size))


def _torch_pooled(
    source_path: Path, batches: Sequence[Batch], input_names: Sequence[str], defaults: Defaults
) -> list[np.ndarray]:
    import torch
    from transformers import AutoModel

    with quiet():
        model = AutoModel.from_pretrained(source_path).eval()
    pooled = []
    for batch in batches:
        feeds = {k: torch.from_numpy(v) for k, v in batch.feeds(input_names).items()}
        with torch.inference_mode():
            hidden = model(**feeds).last_hidden_state.numpy()
        pooled.append(pool(hidden, batch.mask, defaults.pooling))
    return pooled
