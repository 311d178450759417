"""INT8 for the CPU it runs on, chosen by measurement: `bertx export MODEL --int8 [auto|RECIPE]`.

ONNX Runtime's fastest INT8 (dynamic, one scale per activation tensor) loses accuracy on BERT: a few
outlier channels and tokens set the scale for the whole batch. Which fix is cheapest depends on the
model and on the CPU's kernels, so `auto` measures instead of guessing (`int8_search`). This module
holds what every candidate is measured with: the options, the shared context (calibration text, the
proof set and its PyTorch reference, the speed sample), the proof and speed measurements, and the
final choice.

Every candidate's accuracy is its min cosine against PyTorch fp32 on the proof set (never the
calibration text), embedded in the runtime's batches and one text at a time (`proof`); its speed is
texts/s on the same machine in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bertx.artifact import sha256_file
from bertx.backends import Backend, GraphFile, open_graph
from bertx.errors import ExportError, InputFileError
from bertx.manifest import Defaults
from bertx.pooling import pool
from bertx.tokenization import Batch, TextEncoder

from .onnx_export import quiet
from .proof import ProofMeasure, ProofSet, builtin_texts, in_text_order
from .proof import measure as measure_proof

DEFAULT_TARGET = 0.995
_BATCH = 16
_SPEED_BATCH = 32
_SPEED_TEXTS = 96  # the speed sample: three batches of 32, timed in turn with the other graphs
_SPEED_REPEATS = 3
# Longest one fp32 pass over the speed sample may take: a large model is timed on fewer batches, so that the
# search's many side-by-side timings fit the export's time (bert-base on 2 cores: one batch instead of three).
_SPEED_PASS_S = 4.0
_FINAL_ROUNDS = 5


def calibration_texts(path: Path | None = None) -> list[str]:
    """Calibration text: the built-in real sentences (never the parity text), or one text per line of `path`.

    Raises:
        InputFileError: the file is missing, unreadable or has fewer than 8 non-empty lines.
    """
    if path is None:
        return builtin_texts("calibration_sentences.txt") + builtin_texts("calibration_varied.txt")
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
    invariance_min: float | None = None  # worst cosine between a text's batched and lone vectors (None: not run alone)


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
    proof: ProofSet
    reference: np.ndarray  # PyTorch fp32 pooled vectors of the proof texts, in text order
    speed: tuple[Batch, ...]


def choose(
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


def typed_graph(fused: Path, work_dir: Path) -> Path:
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


def pooled_on(path: GraphFile, batches: Sequence[Batch], context: Int8Context) -> list[np.ndarray]:
    """The graph's pooled last layer on each batch."""
    session = open_graph(path)
    outputs = [context.last_output]
    return [
        pool(session.run(outputs, b.feeds(context.input_names))[0], b.mask, context.defaults.pooling) for b in batches
    ]


def proof_measure(path: GraphFile, context: Int8Context, stop_below: float | None = None) -> ProofMeasure:
    """The graph against PyTorch on the proof set, in the runtime's batches and one text at a time (not alone
    when it already misses `stop_below` in batches)."""
    runner = open_graph(path)
    return measure_proof(
        runner,
        context.proof,
        context.reference,
        context.input_names,
        context.last_output,
        context.defaults.pooling,
        stop_below,
    )


def throughput(path: GraphFile, context: Int8Context) -> float:
    """Texts per second on the speed batches: one warm-up pass, then the median of timed passes."""
    return alternating_throughput([path], context, _SPEED_REPEATS)[0]


def alternating_throughput(paths: Sequence[GraphFile], context: Int8Context, rounds: int) -> list[float]:
    """Texts per second of each graph on the search's speed sample (see `side_by_side`)."""
    return side_by_side(paths, context.speed, context.input_names, context.last_output, rounds)


def side_by_side(
    paths: Sequence[GraphFile], batches: Sequence[Batch], input_names: Sequence[str], output: str, rounds: int
) -> list[float]:
    """Texts per second of each graph: one warm-up pass each, then `rounds` rounds that time one pass of
    every graph in turn, so a machine that speeds up or slows down meanwhile favours none of them."""
    sessions = [open_graph(path) for path in paths]
    feeds = [batch.feeds(input_names) for batch in batches]
    texts = sum(batch.input_ids.shape[0] for batch in batches)

    def one_pass(session: Any) -> float:
        start = time.perf_counter()
        for feed in feeds:
            session.run([output], feed)
        return time.perf_counter() - start

    for session in sessions:
        one_pass(session)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for session, timed in zip(sessions, times):
            timed.append(one_pass(session))
    return [float(texts / statistics.median(timed)) for timed in times]


def time_passing_again(
    candidates: list[tuple[Candidate, GraphFile, dict[str, str]]], context: Int8Context, progress: Callable[[str], None]
) -> dict[str, Any] | None:
    """Candidates are timed minutes apart, and a 2-core machine drifts by more than the gap between two
    close candidates; so fp32 and every candidate that meets the target are timed again side by side
    before the fastest is picked (a ladder step with more accurate nodes than the ladder's pick was never
    timed: it cannot be faster). Their rows are updated in place; returns what the manifest records."""
    passing = [i for i, (c, _, _) in enumerate(candidates) if c.meets_target and c.texts_per_s > 0]
    if len(passing) < 2:
        return None
    progress(f"int8: timing fp32 and the {len(passing)} candidates that meet the target again, side by side")
    graphs = [GraphFile(context.fused)] + [candidates[i][1] for i in passing]
    speeds = alternating_throughput(graphs, context, _FINAL_ROUNDS)
    for i, speed in zip(passing, speeds[1:]):
        candidate, path, methods = candidates[i]
        again = replace(candidate, texts_per_s=round(speed, 1), speedup=round(speed / speeds[0], 3), timed_again=True)
        candidates[i] = (again, path, methods)
        progress(f"int8: {candidate.recipe:<20} {again.texts_per_s:7.1f} texts/s ({again.speedup:.2f}× fp32)")
    return {"fp32_texts_per_s": round(speeds[0], 1), "rounds": _FINAL_ROUNDS, "candidates": len(passing)}


def calibration_facts(path: Path | None, batches: Sequence[Batch]) -> dict[str, Any]:
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
    proof: ProofSet,
    calibration_file: Path | None,
    timed: bool = True,
) -> Int8Context:
    """Tokenize the calibration and speed texts and compute the PyTorch reference on the proof set (no speed
    sample unless `timed`: one named recipe is timed by the export's recommendation, not here)."""
    calibration = _batches(encoder, calibration_texts(calibration_file), _BATCH)
    speed = fit_speed_sample(speed_sample(encoder), GraphFile(fused), input_names, last_output) if timed else ()
    reference = in_text_order(proof, _torch_pooled(source_path, proof.batches, input_names, defaults))
    work_dir.mkdir(parents=True, exist_ok=True)
    return Int8Context(
        fused, exported, work_dir, tuple(input_names), last_output, defaults, calibration, proof, reference, speed
    )


def speed_sample(encoder: TextEncoder) -> tuple[Batch, ...]:
    """The texts every speed in an export is measured on: built-in calibration and parity sentences,
    batches of 32, longest first."""
    texts = [*builtin_texts("calibration_sentences.txt"), *builtin_texts("parity_sentences.txt")][:_SPEED_TEXTS]
    return _batches(encoder, texts, _SPEED_BATCH)


def fit_speed_sample(
    batches: Sequence[Batch], fp32: GraphFile, input_names: Sequence[str], output: str
) -> tuple[Batch, ...]:
    """The batches of the speed sample that fp32 runs in about `_SPEED_PASS_S`, cheapest first (at least one):
    the same texts for every graph an export times, and few enough that timing them stays a small part of the
    export. A large model's longest batch, padded to its longest text, can cost more than the rest together."""
    session = open_graph(fp32)
    feeds = [batch.feeds(input_names) for batch in batches]
    session.run([output], feeds[-1])  # warm-up, on the shortest batch
    costs = []
    for feed in feeds:
        start = time.perf_counter()
        session.run([output], feed)
        costs.append(time.perf_counter() - start)
    kept: list[int] = []
    total = 0.0
    for index in sorted(range(len(batches)), key=lambda i: costs[i]):
        if kept and total + costs[index] > _SPEED_PASS_S:
            break
        kept.append(index)
        total += costs[index]
    return tuple(batches[i] for i in sorted(kept))


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
