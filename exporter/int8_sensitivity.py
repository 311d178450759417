"""Which nodes the `mixed` ladders make accurate first: sensitivity measured end to end, once per export.

Both rankings score a graph by 1 - its min cosine against the fp32 graph on the calibration text
(never the proof text, which must stay an independent check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertx.backends import GraphFile
from bertx.cpu import CpuInfo
from bertx.pooling import cosine_rows

from . import int8_openvino as ov_int8
from .int8 import Int8Context, pooled_on
from .int8_recipes import NodeMethod, Recipe, build
from .smoothing import quantizable_nodes


def rank_onnxruntime(
    base: Any, source: Path, recipe: Recipe, context: Int8Context, progress: Callable[[str], None]
) -> list[tuple[str, float]]:
    """Each quantizable node's loss with only that node dynamically quantized in `source` (the smoothed,
    split fp32 graph the mixed recipes start from); most harmful first."""
    reference = pooled_on(GraphFile(source), context.calibration, context)
    names = [node.name for node in quantizable_nodes(base)]
    losses = {}
    progress(f"int8: measuring the sensitivity of {len(names)} onnxruntime nodes, one at a time")
    for i, name in enumerate(names):
        out = context.work_dir / f"int8-only{i}.onnx"
        build(recipe, source, {name: NodeMethod.DYNAMIC}, out, context.calibration, context.input_names)
        losses[name] = _loss(pooled_on(GraphFile(out), context.calibration, context), reference)
        out.unlink(missing_ok=True)
    return sorted(losses.items(), key=lambda item: -item[1])


def rank_openvino(
    model: Any, context: Int8Context, cpu: CpuInfo, progress: Callable[[str], None]
) -> list[tuple[list[str], float]]:
    """How much restoring each MatMul group of `model` (the ladder's NNCF starting point) lowers its loss;
    most helpful first. Each step is a compile of the same model with one group's quantizers bypassed."""
    # Every other calibration batch (longest first, so long and short ones alike): half the cost.
    batches = context.calibration[::2]
    reference = pooled_on(GraphFile(context.fused), batches, context)
    precision = ov_int8.precision_for(cpu)

    def loss(candidate: Any) -> float:
        return _loss(ov_int8.pooled_in_memory(candidate, precision, batches, context), reference)

    groups = ov_int8.matmul_groups(model)
    progress(f"int8: measuring the sensitivity of {len(groups)} OpenVINO MatMul groups, one at a time")
    start = loss(model)
    gains = [(group, start - loss(ov_int8.restore(model, group))) for group in groups]
    return sorted(gains, key=lambda item: -item[1])


def _loss(got: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    return 1.0 - float(np.concatenate([cosine_rows(g, r) for g, r in zip(got, reference)]).min())
