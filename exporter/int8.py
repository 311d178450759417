"""Dynamic INT8 through Optimum's ORTQuantizer, per-channel, with the sensitive nodes kept in fp32.

Dynamic INT8 quantizes each activation tensor with one scale. BERT activations carry a few outlier
dimensions, so on some layers most values land in a handful of the 256 levels. Quantizing every
MatMul of the packaged all-MiniLM-L6-v2 that way gives a min cosine of ~0.95 against fp32 on varied
real text. A few nodes cause most of that loss, and not the ones with the largest error at their own
output: what matters is how much the error grows on its way to the last layer. So bertx:

1. quantizes everything and stops there if the calibration text meets the goal;
2. otherwise measures each node's end-to-end sensitivity: the graph with only that node quantized,
   scored by min cosine of the pooled embeddings against the fp32 graph on the calibration text;
3. keeps the k most sensitive nodes in fp32, for growing k, and takes the first result that meets
   the goal (the int8 gate threshold plus a margin).

The calibration text is not the parity text: the parity gate afterwards measures on unseen sentences.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bertx.cpu import CpuInfo
from bertx.errors import ExportError
from bertx.manifest import Defaults
from bertx.pooling import cosine_rows, pool
from bertx.session import create_session
from bertx.tokenization import Batch, TextEncoder

from .onnx_export import quiet

CALIBRATION_MARGIN = 0.005
_BATCH = 16
_QUANTIZABLE = ("MatMul", "Attention")


def calibration_texts() -> list[str]:
    """Built-in real text used to choose what to quantize (never the parity text)."""
    data = resources.files("bertx.exporter").joinpath("data/calibration_sentences.txt").read_text(encoding="utf-8")
    return [line for line in data.splitlines() if line.strip()]


def quantize_int8(
    fused: Path,
    cpu: CpuInfo,
    work_dir: Path,
    encoder: TextEncoder,
    input_names: Sequence[str],
    last_output: str,
    defaults: Defaults,
    goal: float,
) -> tuple[Path, dict[str, Any]]:
    """Quantize the fused graph to INT8, keeping as few nodes in fp32 as the goal allows.

    Returns the quantized file and the settings to record in the manifest.

    Raises:
        ExportError: quantization failed, or no mix of INT8 nodes reaches the goal.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # The quantizer needs the element type of every MatMul output. onnx's shape inference cannot see
    # through fused com.microsoft ops (Attention, SkipLayerNormalization) and stops with "Unable to
    # find data type"; ORT's symbolic shape inference knows them and annotates the graph.
    in_dir = work_dir / "int8-input"
    in_dir.mkdir(parents=True)
    try:
        typed = SymbolicShapeInference.infer_shapes(onnx.load(str(fused)), auto_merge=True)
    except Exception as exc:  # the shape inference script raises assorted errors on unusual graphs
        raise ExportError(f"symbolic shape inference failed on the fused graph ({exc}); try --optimize O1") from exc
    if typed is None:
        raise ExportError("symbolic shape inference failed on the fused graph; try --optimize O1")
    onnx.save(typed, str(in_dir / "model.onnx"))
    if (fused.parent / "config.json").is_file():
        shutil.copy(fused.parent / "config.json", in_dir / "config.json")

    batches = _calibration_batches(encoder)
    reference = _pooled(fused, batches, input_names, last_output, defaults)
    quantizable = len(_quantizable(typed))
    ranking: list[tuple[str, float]] = []
    tried: list[dict[str, Any]] = []
    nodes = [node.name for node in _quantizable(typed)]

    def score(path: Path) -> np.ndarray:
        pooled = _pooled(path, batches, input_names, last_output, defaults)
        return np.concatenate([cosine_rows(got, ref) for got, ref in zip(pooled, reference)])

    for keep in _schedule(quantizable):
        if keep and not ranking:  # rank only when quantizing everything was not good enough
            ranking = _sensitivity(nodes, in_dir, work_dir, cpu, score)
        excluded = [name for name, _ in ranking[:keep]]
        candidate, config = _quantize(in_dir, work_dir / f"int8-keep{keep}", cpu, excluded=excluded)
        cosines = score(candidate)
        tried.append({"fp32_nodes": keep, "cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean())})
        if float(cosines.min()) >= goal:
            break
    else:
        raise ExportError(
            f"no INT8 mix reached min cosine {goal} on the calibration text (tried {tried}); export without --int8"
        )
    settings = {
        "tool": "optimum ORTQuantizer",
        "preset": cpu.int8_preset,
        "chosen_for_cpu": cpu.model,
        "cpu_features": {"avx2": cpu.avx2, "avx512": cpu.avx512, "vnni": cpu.vnni},
        "mode": "dynamic",
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "weights": config.weights_dtype.name,
        "activations": config.activations_dtype.name,
        "operators": sorted(str(getattr(op, "value", op)) for op in config.operators_to_quantize),
        "quantized_nodes": quantizable - len(excluded),
        "fp32_nodes": excluded,
        "calibration_goal": goal,
        "calibration_texts": sum(b.input_ids.shape[0] for b in batches),
        "search": tried,
        "sensitivity": {name: round(loss, 6) for name, loss in ranking},
    }
    return candidate, settings


def _quantizable(model: Any) -> list[Any]:
    """MatMul and Attention nodes whose weights are initializers: those the quantizer converts."""
    weights = {init.name for init in model.graph.initializer}
    return [
        node
        for node in model.graph.node
        if node.op_type in _QUANTIZABLE and len(node.input) > 1 and node.input[1] in weights
    ]


def _sensitivity(
    nodes: Sequence[str], in_dir: Path, work_dir: Path, cpu: CpuInfo, score: Callable[[Path], np.ndarray]
) -> list[tuple[str, float]]:
    """Each node's end-to-end loss (1 - min cosine) with only it quantized, most harmful first."""
    losses = {}
    for i, name in enumerate(nodes):
        path, _ = _quantize(in_dir, work_dir / f"int8-only{i}", cpu, only=[name])
        losses[name] = 1.0 - float(score(path).min())
        shutil.rmtree(path.parent, ignore_errors=True)
    return sorted(losses.items(), key=lambda item: -item[1])


def _schedule(n: int) -> list[int]:
    """How many of the most sensitive nodes to keep in fp32 at each try: 0 … 10 one by one, then ×1.5."""
    steps, k = [], 0
    while k < n:
        steps.append(k)
        k = k + 1 if k < 10 else int(k * 1.5)
    return steps


def _calibration_batches(encoder: TextEncoder) -> list[Batch]:
    encodings = encoder.encode(calibration_texts())
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
    return [encoder.pad([encodings[i] for i in order[s : s + _BATCH]]) for s in range(0, len(order), _BATCH)]


def _pooled(
    path: Path, batches: Sequence[Batch], input_names: Sequence[str], last_output: str, defaults: Defaults
) -> list[np.ndarray]:
    session = create_session(path)
    return [
        pool(session.run([last_output], batch.feeds(input_names))[0], batch.mask, defaults.pooling) for batch in batches
    ]


def _quantize(
    in_dir: Path, out_dir: Path, cpu: CpuInfo, excluded: Sequence[str] = (), only: Sequence[str] = ()
) -> tuple[Path, Any]:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = getattr(AutoQuantizationConfig, cpu.int8_preset)
    config = preset(is_static=False, per_channel=True, nodes_to_exclude=list(excluded), nodes_to_quantize=list(only))
    try:
        with quiet():
            quantizer = ORTQuantizer.from_pretrained(in_dir, file_name="model.onnx")
            quantizer.quantize(config, save_dir=out_dir, file_suffix=None)
    except Exception as exc:  # ORT's quantizer raises RuntimeError/ValueError/KeyError by op
        raise ExportError(f"int8 quantization ({cpu.int8_preset}) failed: {exc}") from exc
    return out_dir / "model.onnx", config
