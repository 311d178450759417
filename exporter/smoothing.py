"""Activation smoothing: move per-channel activation outliers into the weights before INT8.

Dynamic INT8 gives each activation tensor one scale. The output of BERT's LayerNorms carries a few
channels that are tens of times larger than the rest (LayerNorm's gamma puts them there), so most
channels land in a handful of the 256 levels. For a MatMul `X @ W`, dividing input channel k by s_k
and multiplying row k of W by s_k leaves the product unchanged in exact arithmetic, while flattening
the activation's range; the weights are quantized per output channel and absorb the larger row well.
With s_k = max|X_k|^alpha / max|W_k|^(1 - alpha) both sides share the difficulty.

bertx smooths only inputs produced by a LayerNorm: there the outliers sit in fixed channels. BERT is
post-LN, so that LayerNorm's output also feeds the residual path and the `hidden_states` outputs; its
gamma cannot be rescaled. A `Mul` by 1/s is inserted in front of the quantized consumers instead,
leaving the residual and every hidden state untouched. The smoothed graph is the same function as the
original (checked in the tests to float rounding).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bertx.tokenization import Batch

_NORMALIZATIONS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization")
_QUANTIZABLE = ("MatMul", "Attention")
# Nodes bertx adds to stay fp32 whatever the recipe (the outlier-unit branches, see `outliers`).
FP32_BRANCH_PREFIX = "bertx_fp32/"


def quantizable_nodes(model: Any) -> list[Any]:
    """MatMul and Attention nodes whose weights are initializers: those INT8 quantization converts."""
    weights = {init.name for init in model.graph.initializer}
    return [
        node
        for node in model.graph.node
        if node.op_type in _QUANTIZABLE
        and len(node.input) > 1
        and node.input[1] in weights
        and not node.name.startswith(FP32_BRANCH_PREFIX)
    ]


def smoothable_inputs(model: Any) -> dict[str, list[Any]]:
    """Quantizable nodes grouped by their activation input, for inputs produced by a LayerNorm."""
    producers = {output: node.op_type for node in model.graph.node for output in node.output}
    groups: dict[str, list[Any]] = {}
    for node in quantizable_nodes(model):
        if producers.get(node.input[0]) in _NORMALIZATIONS:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_ranges(
    model: Any, tensors: Iterable[str], batches: Sequence[Batch], input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of each named tensor over the real (unpadded) tokens of `batches`."""
    import onnx
    import onnxruntime as ort

    names = sorted(set(tensors))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {output.name for output in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for batch in batches:
        real = batch.mask.astype(bool)
        for name, value in zip(names, session.run(names, batch.feeds(input_names))):
            peak = np.abs(value[real]).max(axis=0)
            ranges[name] = peak if name not in ranges else np.maximum(ranges[name], peak)
    return ranges


def smooth(model: Any, batches: Sequence[Batch], input_names: Sequence[str], alpha: float) -> tuple[Any, int]:
    """A copy of `model` with the LayerNorm-fed quantizable inputs smoothed (see module doc).

    Returns the new model and how many activation tensors were smoothed.
    """
    import onnx
    from onnx import numpy_helper

    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    groups = smoothable_inputs(smoothed)
    if not groups:
        return smoothed, 0
    ranges = activation_ranges(smoothed, groups, batches, input_names)
    initializers = {init.name: init for init in smoothed.graph.initializer}
    position = {id(node): i for i, node in enumerate(smoothed.graph.node)}
    inserts: list[tuple[int, Any]] = []
    for tensor, consumers in groups.items():
        weights = [numpy_helper.to_array(initializers[node.input[1]]) for node in consumers]
        weight_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scale = np.power(np.maximum(ranges[tensor], 1e-5), alpha) / np.power(np.maximum(weight_peak, 1e-5), 1 - alpha)
        scale = np.clip(scale, 1e-4, 1e4).astype(np.float32)
        for node, weight in zip(consumers, weights):
            rescaled = (weight * scale[:, None]).astype(weight.dtype)
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(rescaled, node.input[1]))
        safe = "".join(c if c.isalnum() else "_" for c in tensor)
        inverse = f"bertx_smooth_{safe}_inv"
        smoothed.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
        output = f"bertx_smooth_{safe}"
        for node in consumers:
            node.input[0] = output
        mul = onnx.helper.make_node("Mul", [tensor, inverse], [output], name=f"bertx_smooth_{safe}_mul")
        inserts.append((min(position[id(node)] for node in consumers), mul))
    # Each Mul goes right before its first consumer, which keeps the node list topologically sorted.
    for index, mul in sorted(inserts, key=lambda item: -item[0]):
        smoothed.graph.node.insert(index, mul)
    return smoothed, len(groups)
