"""Outlier units: the few feed-forward hidden units whose activations dwarf the rest, kept in fp32.

The input of BERT's feed-forward output projection (GELU of the intermediate layer, 4 × hidden wide)
has a handful of units that reach 4–15 times the median unit's peak, in every layer and for every
text. Smoothing cannot help there: the outliers are not tied to a LayerNorm's gamma and they move
with the token. With one int8 scale per activation tensor those units set the scale and the other
1,500 land on a few levels, which makes these projections the most harmful nodes to quantize.

The feed-forward block is a sum over its hidden units, so it splits exactly:

    GELU(x W1 + b1) W2 = GELU(x W1[:, R] + b1[R]) W2[R, :] + GELU(x W1[:, O] + b1[O]) W2[O, :]

with O the `units` units of largest peak on the calibration text and R the rest. The first term is
the original nodes with narrower weights (and is quantized as before); the second is a small fp32
branch (x @ a hidden × units matrix, units × hidden back) added to the projection's output. The split
graph is the same function as the original; the tests check it against PyTorch's hidden states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bertx.tokenization import Batch

from .smoothing import FP32_BRANCH_PREFIX, activation_ranges

_GELUS = ("BiasGelu", "FastGelu", "Gelu")


def feed_forward_blocks(model: Any) -> list[tuple[Any, Any, Any]]:
    """(up MatMul, GELU, down MatMul) triples: fused feed-forward blocks with initializer weights."""
    weights = {init.name for init in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    blocks = []
    for down in model.graph.node:
        if down.op_type != "MatMul" or down.input[1] not in weights:
            continue
        gelu = producers.get(down.input[0])
        if gelu is None or gelu.op_type not in _GELUS or consumers.get(gelu.output[0]) != 1:
            continue
        up = producers.get(gelu.input[0])
        if up is None or up.op_type != "MatMul" or up.input[1] not in weights or consumers.get(up.output[0]) != 1:
            continue
        if len(gelu.input) > 1 and gelu.input[1] not in weights:
            continue
        blocks.append((up, gelu, down))
    return blocks


def split_outlier_units(
    model: Any, batches: Sequence[Batch], input_names: Sequence[str], units: int
) -> tuple[Any, int]:
    """A copy of `model` with each feed-forward block's `units` largest hidden units moved to an fp32
    branch (see module doc). Returns the new model and how many blocks were split."""
    import onnx
    from onnx import helper, numpy_helper

    split = onnx.ModelProto()
    split.CopyFrom(model)
    graph = split.graph
    initializers = {init.name: init for init in graph.initializer}
    # Only blocks wide enough that the outliers are a small part of them.
    blocks = [block for block in feed_forward_blocks(split) if initializers[block[0].input[1]].dims[-1] > 2 * units]
    if units <= 0 or not blocks:
        return split, 0
    ranges = activation_ranges(split, [gelu.output[0] for _, gelu, _ in blocks], batches, input_names)
    shapes = {info.name: info for info in graph.value_info}
    branches: dict[str, list[Any]] = {}
    for up, gelu, down in blocks:
        peaks = ranges[gelu.output[0]]
        outliers = np.sort(np.argsort(-peaks, kind="stable")[:units])
        rest = np.setdiff1d(np.arange(peaks.size), outliers)
        w1 = numpy_helper.to_array(initializers[up.input[1]])
        w2 = numpy_helper.to_array(initializers[down.input[1]])
        bias = numpy_helper.to_array(initializers[gelu.input[1]]) if len(gelu.input) > 1 else None
        prefix = f"{FP32_BRANCH_PREFIX}{down.name}/"

        def constant(name: str, value: np.ndarray, prefix: str = prefix) -> str:
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), prefix + name))
            return prefix + name

        up.input[1] = constant("up_rest", w1[:, rest])
        down.input[1] = constant("down_rest", w2[rest])
        if bias is not None:
            gelu.input[1] = constant("bias_rest", bias[rest])
        for narrowed in (up.output[0], gelu.output[0]):
            if narrowed in shapes and shapes[narrowed].type.tensor_type.shape.dim:
                shapes[narrowed].type.tensor_type.shape.dim[-1].dim_value = int(rest.size)
        output = down.output[0]
        down.output[0] = prefix + "rest"
        if output in shapes:
            shapes[output].name = prefix + "rest"
        gelu_inputs = [prefix + "up"] + ([constant("bias", bias[outliers])] if bias is not None else [])
        branch_gelu = helper.make_node(
            gelu.op_type, gelu_inputs, [prefix + "gelu"], name=prefix + "gelu", domain=gelu.domain
        )
        branch_gelu.attribute.extend(gelu.attribute)
        w_up, w_down = constant("w_up", w1[:, outliers]), constant("w_down", w2[outliers])
        branches[down.name] = [
            helper.make_node("MatMul", [up.input[0], w_up], [prefix + "up"], name=prefix + "up"),
            branch_gelu,
            helper.make_node("MatMul", [prefix + "gelu", w_down], [prefix + "down"], name=prefix + "down"),
            helper.make_node("Add", [prefix + "rest", prefix + "down"], [output], name=prefix + "add"),
        ]
    # Each branch goes right after its projection, which keeps the node list topologically sorted.
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        graph.node.append(node)
        graph.node.extend(branches.get(node.name, []))
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return split, len(blocks)
