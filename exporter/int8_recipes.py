"""The INT8 recipes bertx can build, and which of them suit which CPU.

Every recipe turns the fused fp32 graph into an INT8 one through ONNX Runtime's quantization tools:

- `dynamic`: MatMulInteger / QAttention, weights per output channel, one scale per activation tensor
  computed at run time. The fastest kernels, but one outlier token or channel sets the scale for the
  whole batch.
- `static`: QDQ with activation scales calibrated on text (MinMax, percentile or entropy). No run-time
  range computation, but a fixed scale has to cover every text it will ever see.
- `blockwise`: 8-bit weights in blocks of `block` input channels (MatMulNBits); the activations are
  quantized to int8 per row and block at run time, so an outlier only costs precision to its own
  token and block. Far more accurate, somewhat slower, and MatMul only (attention stays QAttention).
- `mixed`: dynamic everywhere except the `accurate_nodes` most sensitive nodes, which are blockwise
  (MatMul) or fp32 (fused Attention).

`smooth_alpha` first applies activation smoothing (see `smoothing`) to the LayerNorm-fed inputs;
`outlier_units` then moves that many feed-forward hidden units per layer to an fp32 branch (see
`outliers`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from bertx.cpu import CpuInfo
from bertx.errors import ExportError
from bertx.tokenization import Batch

from .int8_openvino import RECIPES as OPENVINO_RECIPES
from .onnx_export import quiet
from .smoothing import quantizable_nodes

Mode = Literal["dynamic", "static", "blockwise", "mixed"]
Calibration = Literal["minmax", "percentile", "entropy"]
SMOOTH_ALPHA = 0.5
OUTLIER_UNITS = 16


class NodeMethod(str, Enum):
    """How one quantizable node is computed in an INT8 graph."""

    DYNAMIC = "dynamic"
    STATIC = "static"
    BLOCKWISE = "blockwise"
    FP32 = "fp32"


@dataclass(frozen=True)
class Recipe:
    """One way to build an INT8 graph (see module doc)."""

    name: str
    mode: Mode
    per_channel: bool = True
    reduce_range: bool = False
    weights: Literal["int8", "uint8"] = "int8"
    calibration: Calibration | None = None
    smooth_alpha: float | None = None
    outlier_units: int = 0
    accurate_nodes: int = 0

    def describe(self) -> str:
        """One line for tables: what this recipe does."""
        parts: list[str] = [self.mode]
        if self.mode == "static":
            parts.append(f"QDQ {self.calibration}")
        if self.mode in ("dynamic", "static", "mixed"):
            parts.append("per-channel" if self.per_channel else "per-tensor")
            parts.append(f"u8 × {'u8' if self.weights == 'uint8' else 's8'}")
        if self.reduce_range:
            parts.append("7-bit weights")
        if self.smooth_alpha is not None:
            parts.append(f"smoothed α={self.smooth_alpha}")
        if self.outlier_units:
            parts.append(f"{self.outlier_units} outlier FFN units/layer fp32")
        if self.mode == "mixed":
            parts.append(f"{self.accurate_nodes} most sensitive nodes blockwise/fp32")
        return ", ".join(parts)


def recipes_for(cpu: CpuInfo) -> list[Recipe]:
    """The fixed candidates the search measures on this CPU (the `mixed` ladder comes on top).

    Without VNNI, x86's u8 × s8 kernels add pairs of products in int16 (vpmaddubsw) and saturate;
    weights with 7 bits (`reduce_range`) cannot overflow there, so the smoothed recipes use them.
    """
    no_vnni_x86 = cpu.machine not in ("aarch64", "arm64") and not cpu.vnni
    candidates = [
        Recipe("dynamic-per-tensor", "dynamic", per_channel=False),
        Recipe("dynamic", "dynamic"),
        Recipe("dynamic-u8u8", "dynamic", weights="uint8"),
        Recipe("static-minmax", "static", calibration="minmax"),
        Recipe("static-percentile", "static", calibration="percentile"),
        Recipe("static-entropy", "static", calibration="entropy"),
        Recipe("smooth-dynamic", "dynamic", smooth_alpha=SMOOTH_ALPHA, reduce_range=no_vnni_x86),
        Recipe(
            "split-dynamic", "dynamic", smooth_alpha=SMOOTH_ALPHA, outlier_units=OUTLIER_UNITS, reduce_range=no_vnni_x86
        ),
        Recipe("blockwise", "blockwise", smooth_alpha=SMOOTH_ALPHA, reduce_range=no_vnni_x86),
    ]
    if no_vnni_x86:
        candidates.insert(2, Recipe("dynamic-reduce-range", "dynamic", reduce_range=True))
    return candidates


def mixed_recipe(cpu: CpuInfo, accurate_nodes: int) -> Recipe:
    """Smoothed, split dynamic INT8 with the `accurate_nodes` most sensitive nodes made accurate."""
    base = next(r for r in recipes_for(cpu) if r.name == "split-dynamic")
    return replace(base, name=f"mixed-{accurate_nodes}", mode="mixed", accurate_nodes=accurate_nodes)


def named_recipe(name: str, cpu: CpuInfo) -> Recipe:
    """A recipe by the name `--int8 NAME` takes (`mixed-K` included).

    Raises:
        ExportError: an unknown name; the message lists the known ones.
    """
    known = {recipe.name: recipe for recipe in recipes_for(cpu)}
    if name in known:
        return known[name]
    prefix, _, count = name.partition("-")
    if prefix == "mixed" and count.isdigit():
        return mixed_recipe(cpu, int(count))
    names = [*known, *(r.name for r in OPENVINO_RECIPES)]
    raise ExportError(f"unknown --int8 recipe {name!r}: expected auto, {', '.join(names)} mixed-K or openvino-mixed-K")


def node_methods(model: Any, recipe: Recipe, ranking: Sequence[str] = ()) -> dict[str, NodeMethod]:
    """What each quantizable node of `model` becomes under `recipe` (`ranking`: most sensitive first)."""
    nodes = quantizable_nodes(model)
    if recipe.mode in ("dynamic", "static"):
        method = NodeMethod.DYNAMIC if recipe.mode == "dynamic" else NodeMethod.STATIC
        return {node.name: method for node in nodes}
    accurate = {node.name for node in nodes} if recipe.mode == "blockwise" else set(ranking[: recipe.accurate_nodes])
    methods = {}
    for node in nodes:
        if node.name not in accurate:
            methods[node.name] = NodeMethod.DYNAMIC
        elif node.op_type == "MatMul":
            methods[node.name] = NodeMethod.BLOCKWISE
        else:  # a fused Attention has no blockwise kernel; it stays dynamic in `blockwise`, fp32 in `mixed`
            methods[node.name] = NodeMethod.DYNAMIC if recipe.mode == "blockwise" else NodeMethod.FP32
    return methods


def build(
    recipe: Recipe,
    model_path: Path,
    methods: dict[str, NodeMethod],
    out_path: Path,
    calibration: Sequence[Batch],
    input_names: Sequence[str],
) -> Path:
    """Quantize `model_path` (already smoothed where the recipe says so) into `out_path`.

    Raises:
        ExportError: ONNX Runtime's quantizer failed; the message names the recipe.
    """
    import onnx

    try:
        # ORT's histogram calibrators print their progress to stdout, which belongs to the user's data.
        with quiet(), contextlib.redirect_stdout(io.StringIO()):
            model = onnx.load(str(model_path))
            blockwise = [name for name, method in methods.items() if method is NodeMethod.BLOCKWISE]
            if blockwise:
                model = _blockwise(model, blockwise)
            staged = out_path.with_suffix(".stage.onnx")
            onnx.save(model, str(staged))
            dynamic = [name for name, method in methods.items() if method is NodeMethod.DYNAMIC]
            static = [name for name, method in methods.items() if method is NodeMethod.STATIC]
            if static:
                _static(recipe, staged, out_path, static, calibration, input_names)
            elif dynamic:
                _dynamic(recipe, staged, out_path, dynamic)
            else:
                staged.replace(out_path)
            staged.unlink(missing_ok=True)
    except ExportError:
        raise
    except Exception as exc:  # ORT's quantizers raise RuntimeError/ValueError/KeyError/AssertionError by op
        raise ExportError(f"int8 recipe {recipe.name} ({recipe.describe()}) failed: {exc}") from exc
    return out_path


def block_size(model: Any, nodes: Sequence[str]) -> int:
    """The largest of 128, 64, 32, 16 that divides the input width of every listed MatMul."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    wanted = set(nodes)
    widths = [
        numpy_helper.to_array(initializers[node.input[1]]).shape[0] for node in model.graph.node if node.name in wanted
    ]
    return next((size for size in (128, 64, 32) if all(w % size == 0 for w in widths)), 16)


def _blockwise(model: Any, nodes: Sequence[str]) -> Any:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # accuracy_level 4: int8 × int8 compute, activations quantized per row and block at run time.
    # The quantizer converts every MatMul its include list names *or* its op types cover, so the
    # MatMuls that stay as they are must be excluded by name.
    wanted = set(nodes)
    others = [node.name for node in model.graph.node if node.op_type == "MatMul" and node.name not in wanted]
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=block_size(model, nodes),
        is_symmetric=True,
        accuracy_level=4,
        nodes_to_include=list(nodes),
        nodes_to_exclude=others,
    )
    quantizer.process()
    return quantizer.model.model


def _dynamic(recipe: Recipe, source: Path, target: Path, nodes: Sequence[str]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=QuantType.QUInt8 if recipe.weights == "uint8" else QuantType.QInt8,
        nodes_to_quantize=list(nodes),
        # Fused com.microsoft ops hide element types from onnx's shape inference; say they are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _static(
    recipe: Recipe,
    source: Path,
    target: Path,
    nodes: Sequence[str],
    calibration: Sequence[Batch],
    input_names: Sequence[str],
) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    # ORT's histogram calibrators stack the tensors of all batches, so every batch gets one length.
    length = max(batch.input_ids.shape[1] for batch in calibration)
    feeds = [{k: _pad_to(v, length) for k, v in batch.feeds(input_names).items()} for batch in calibration]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=list(nodes),
        calibrate_method=methods[recipe.calibration or "minmax"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _pad_to(array: Any, length: int) -> Any:
    """Right-pad token inputs to `length` (with 0s: masked positions, which attention ignores)."""
    import numpy as np

    return np.pad(array, ((0, 0), (0, length - array.shape[1])))
