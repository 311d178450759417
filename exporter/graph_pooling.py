"""A `sentence_embedding` output inside the ONNX graph: mask-aware pooling of the last hidden state
(and optional L2 normalization), so that any onnxruntime binding — Java, C#, JavaScript, Rust, C++ —
gets the model's sentence vectors from the graph and a tokenizer, with no bertx.

The nodes are appended to each finished ONNX variant, after fusion and quantization, so they always
compute in float32 and no quantizer touches them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bertx.errors import ExportError
from bertx.manifest import Pooling

SENTENCE_EMBEDDING = "sentence_embedding"
MASK_INPUT = "attention_mask"
GRAPH_POOLINGS = (Pooling.CLS, Pooling.MEAN, Pooling.MAX, Pooling.MEAN_SQRT_LEN)
_PREFIX = "bertx_pooling/"


def add_sentence_embedding(path: Path, last_output: str, pooling: Pooling, normalize: bool) -> None:
    """Rewrite the ONNX file at `path` with an extra float32 output `sentence_embedding` (batch, hidden).

    Padding never contributes, exactly as the runtime pools: mean divides by the number of real tokens,
    max ignores padded positions, normalization divides by max(‖x‖, 1e-12).

    Raises:
        ExportError: a pooling the graph cannot express, or a graph without the inputs and output needed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if pooling not in GRAPH_POOLINGS:
        names = ", ".join(p.value for p in GRAPH_POOLINGS)
        raise ExportError(f"a sentence_embedding output can pool with {names}, not {pooling.value}")
    model = onnx.load(str(path))
    graph = model.graph
    if MASK_INPUT not in {i.name for i in graph.input}:
        raise ExportError(f"{path.name} has no {MASK_INPUT} input to pool with")
    outputs = {o.name: o for o in graph.output}
    if last_output not in outputs:
        raise ExportError(f"{path.name} has no output {last_output}")
    if SENTENCE_EMBEDDING in outputs:
        raise ExportError(f"{path.name} already has a {SENTENCE_EMBEDDING} output")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    nodes: list[Any] = []
    constants: list[Any] = []

    def name(local: str) -> str:
        return _PREFIX + local

    def constant(local: str, value: Any) -> str:
        constants.append(numpy_helper.from_array(value, name(local)))
        return name(local)

    def node(op: str, inputs: list[str], local: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [name(local)], name=name(local), **attributes))
        return name(local)

    def reduce(op: str, x: str, local: str) -> str:
        # ReduceSum takes its axes as an input from opset 13, the other reductions from opset 18.
        if opset >= 18 or (op == "ReduceSum" and opset >= 13):
            return node(op, [x, constant(f"{local}_axes", _int64([1]))], local, keepdims=0)
        return node(op, [x], local, axes=[1], keepdims=0)

    hidden = last_output
    if outputs[last_output].type.tensor_type.elem_type != TensorProto.FLOAT:
        hidden = node("Cast", [last_output], "hidden_float", to=TensorProto.FLOAT)
    if pooling is Pooling.CLS:
        pooled = node("Gather", [hidden, constant("first", _int64(0))], "cls", axis=1)
    else:
        mask = node("Unsqueeze", [MASK_INPUT, constant("mask_axes", _int64([2]))], "mask_3d")
        if pooling is Pooling.MAX:
            real = node("Cast", [mask], "real", to=TensorProto.BOOL)
            lowest = constant("minus_inf", np.array(-np.inf, dtype=np.float32))
            pooled = reduce("ReduceMax", node("Where", [real, hidden, lowest], "masked"), "max")
        else:
            weights = node("Cast", [mask], "mask_float", to=TensorProto.FLOAT)
            total = reduce("ReduceSum", node("Mul", [hidden, weights], "masked"), "sum")
            counts = node("Max", [reduce("ReduceSum", weights, "count"), constant("one", _f32(1.0))], "counts")
            if pooling is Pooling.MEAN_SQRT_LEN:
                counts = node("Sqrt", [counts], "sqrt_counts")
            pooled = node("Div", [total, counts], "mean")
    if normalize:
        # ReduceL2 over axis 1 with keepdims: the norm of each row, kept as (batch, 1) to divide by.
        if opset >= 18:
            norms = node("ReduceL2", [pooled, constant("norm_axes", _int64([1]))], "norm", keepdims=1)
        else:
            norms = node("ReduceL2", [pooled], "norm", axes=[1], keepdims=1)
        floor = node("Max", [norms, constant("eps", _f32(1e-12))], "norm_floor")
        pooled = node("Div", [pooled, floor], "normalized")
    nodes.append(helper.make_node("Identity", [pooled], [SENTENCE_EMBEDDING], name=name("output")))
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    width = outputs[last_output].type.tensor_type.shape.dim[2]
    output = helper.make_tensor_value_info(SENTENCE_EMBEDDING, TensorProto.FLOAT, ["batch_size", None])
    output.type.tensor_type.shape.dim[1].CopyFrom(width)
    graph.output.append(output)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _int64(value: Any) -> np.ndarray:
    return np.array(value, dtype=np.int64)


def _f32(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)
