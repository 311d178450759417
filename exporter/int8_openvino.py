"""INT8 candidates for OpenVINO, built by NNCF, measured in the same search as onnxruntime's.

NNCF's post-training quantization (`model_type=TRANSFORMER`, which also smooths with NNCF's own α
unless a recipe sets one) inserts static (calibrated) INT8 quantizers into an OpenVINO model
read from the plain exported ONNX (NNCF cannot yet read the graph that onnxruntime's fusions wrote).
What is not quantized runs in bf16 on CPUs that compute it, else in f32, so keeping a sensitive node
out of INT8 costs less here than on onnxruntime. The recipes reuse the ideas the onnxruntime search
uses: activation smoothing (NNCF's SmoothQuant) and keeping the most harmful nodes accurate, here the
feed-forward output projections, whose input carries per-token outliers that no static scale covers.
When none of the fixed recipes meets the target, `openvino-mixed-K` also takes the K most sensitive
MatMul groups out of INT8: the quantizers in front of them are bypassed in the one NNCF model (see
`restore`), so each step of that ladder costs a compile, not another calibration. Sensitivity is
measured the same way, one group restored at a time.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertx.backends import Backend, GraphFile, InferencePrecision
from bertx.cpu import CpuInfo
from bertx.errors import ExportError
from bertx.pooling import pool
from bertx.tokenization import Batch

from .onnx_export import quiet

PREFIX = "openvino-"
MIXED = f"{PREFIX}mixed-"
SMOOTH_ALPHA = 0.5


@dataclass(frozen=True)
class OpenVINORecipe:
    """One NNCF quantization: smoothing, and whether the feed-forward output projections stay accurate."""

    name: str
    smooth_alpha: float | None = None
    keep_ffn_out: bool = False
    accurate_nodes: int = 0  # how many of the most sensitive nodes (onnxruntime's ranking) stay accurate

    def describe(self) -> str:
        parts = ["NNCF static INT8 (OpenVINO)"]
        parts.append(f"SmoothQuant α={self.smooth_alpha}" if self.smooth_alpha is not None else "NNCF's defaults")
        if self.keep_ffn_out:
            parts.append("feed-forward output projections not quantized")
        if self.accurate_nodes:
            parts.append(f"{self.accurate_nodes} most sensitive nodes not quantized")
        return ", ".join(parts)


RECIPES = (
    OpenVINORecipe(f"{PREFIX}static"),
    OpenVINORecipe(f"{PREFIX}smooth", smooth_alpha=SMOOTH_ALPHA),
    OpenVINORecipe(f"{PREFIX}ffn-accurate", keep_ffn_out=True),
    OpenVINORecipe(f"{PREFIX}smooth-ffn-accurate", smooth_alpha=SMOOTH_ALPHA, keep_ffn_out=True),
)


def unavailable(cpu: CpuInfo) -> str | None:
    """Why OpenVINO candidates cannot be built here, or None when they can."""
    if cpu.machine not in ("x86_64", "amd64"):
        return f"OpenVINO INT8 candidates are built on x86-64 CPUs only, this one is {cpu.machine}"
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install 'bertx[export]')"
    return None


def recipes_for(cpu: CpuInfo) -> list[OpenVINORecipe]:
    """The OpenVINO recipes this CPU may use, least accurate first (none where OpenVINO cannot run them)."""
    return [] if unavailable(cpu) else [r for r in RECIPES if refused(r, cpu) is None]


def mixed(accurate_nodes: int) -> OpenVINORecipe:
    """Smoothed INT8 with the feed-forward output projections and the `accurate_nodes` most sensitive
    nodes left out of INT8."""
    return OpenVINORecipe(
        f"{MIXED}{accurate_nodes}", smooth_alpha=SMOOTH_ALPHA, keep_ffn_out=True, accurate_nodes=accurate_nodes
    )


def named(name: str) -> OpenVINORecipe | None:
    """The OpenVINO recipe called `name` (`openvino-mixed-K` included), or None when it is not one."""
    count = name.removeprefix(MIXED)
    if count != name and count.isdigit() and int(count) > 0:
        return mixed(int(count))
    return next((r for r in RECIPES if r.name == name), None)


# The mixed ladder's starting point: smoothed, feed-forward outputs accurate (its quantizers are bypassed
# group by group from there).
LADDER_BASE = RECIPES[-1]


def refused(recipe: OpenVINORecipe, cpu: CpuInfo) -> str | None:
    """Why `recipe` is not built on this CPU, or None.

    On AMX CPUs, OpenVINO's graphs that mix INT8 MatMuls with bf16 ones gave wrong vectors for some texts
    (min cosine 0.73 against PyTorch on 1,000 real texts for openvino-mixed-4, some right alone and
    wrong only in certain batches, following the CPU plugin's per-shape kernel cache), while its
    all-INT8 graphs and the same mixed graph held to AVX-512 VNNI were right. Until OpenVINO's AMX path
    is fixed, only the all-INT8 recipes are built there.
    """
    if cpu.cpu_class == "amx" and (recipe.keep_ffn_out or recipe.accurate_nodes):
        return (
            "refused on AMX CPUs: OpenVINO's mixed INT8/bf16 graphs gave wrong vectors there for some texts "
            "and batch shapes (all-INT8 graphs and bf16 are right)"
        )
    return None


def matmul_groups(model: Any) -> list[list[str]]:
    """The quantized MatMuls of an NNCF model (those with a FakeQuantize on an input), grouped as a
    sensitivity unit: a layer's attention projections and products together, every other MatMul alone."""
    groups: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or not _quantized_inputs(op):
            continue
        name = op.get_friendly_name()
        layer = re.search(r"layer\.(\d+)/", name)
        attention = "/attention/" in name and not re.search(r"(out_lin|output/dense)/MatMul$", name)
        key = f"layer {layer.group(1)} attention" if layer is not None and attention else name
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def restore(model: Any, names: Sequence[str]) -> Any:
    """A copy of `model` whose listed MatMuls read their inputs unquantized: the FakeQuantize in front of
    each is bypassed for that MatMul alone (the weights keep their 8-bit values, the activations do not)."""
    copy = model.clone()
    wanted = set(names)
    for op in copy.get_ordered_ops():
        if op.get_type_name() == "MatMul" and op.get_friendly_name() in wanted:
            for i in _quantized_inputs(op):
                op.input(i).replace_source_output(op.input_value(i).get_node().input_value(0))
    return copy


def pooled_in_memory(
    model: Any, precision: InferencePrecision, batches: Sequence[Batch], context: Any
) -> list[np.ndarray]:
    """`model`'s pooled last layer on each batch, compiled in memory (`context`: the search's `Int8Context`)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision.value, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    out = []
    for batch in batches:
        request.infer(batch.feeds(context.input_names))
        hidden = np.array(request.get_tensor(context.last_output).data, dtype=np.float32)
        out.append(pool(hidden, batch.mask, context.defaults.pooling))
    return out


def _quantized_inputs(op: Any) -> list[int]:
    return [i for i in range(op.get_input_size()) if op.input_value(i).get_node().get_type_name() == "FakeQuantize"]


def precision_for(cpu: CpuInfo) -> InferencePrecision:
    """What the non-INT8 part computes in: bf16 where the CPU has it."""
    return InferencePrecision.BF16 if cpu.bf16 else InferencePrecision.F32


def quantize_model(
    recipe: OpenVINORecipe, exported: Path, calibration: Sequence[Batch], input_names: Sequence[str], cpu: CpuInfo
) -> Any:
    """Quantize `exported` (plain ONNX) with NNCF as `recipe` says (its fixed part: smoothing and the
    feed-forward outputs kept accurate) and return the OpenVINO model.

    Raises:
        ExportError: OpenVINO or NNCF is missing, the recipe is refused on this CPU, or NNCF failed.
    """
    reason = unavailable(cpu) or refused(recipe, cpu)
    if reason is not None:
        raise ExportError(f"cannot build {recipe.name}: {reason}")
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)  # its progress bars would break the export's own progress lines
    kept = ffn_out_matmuls(exported) if recipe.keep_ffn_out else []
    advanced = nncf.AdvancedQuantizationParameters()
    if recipe.smooth_alpha is not None:
        advanced.smooth_quant_alphas = nncf.AdvancedSmoothQuantParameters(matmul=recipe.smooth_alpha)
    model = ov.Core().read_model(str(exported))
    dataset = nncf.Dataset([batch.feeds(input_names) for batch in calibration])
    try:
        # NNCF draws its own progress bars on stdout, which the export's progress lines own.
        with quiet(), contextlib.redirect_stdout(io.StringIO()):
            return nncf.quantize(
                model,
                dataset,
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(calibration),
                ignored_scope=nncf.IgnoredScope(names=kept, validate=False),
                advanced_parameters=advanced,
            )
    except Exception as exc:  # NNCF raises its own and OpenVINO's errors; name the recipe that failed
        raise ExportError(f"NNCF could not quantize for {recipe.name}: {exc}") from exc


def save(model: Any, out: Path, cpu: CpuInfo) -> tuple[GraphFile, int, int]:
    """Write `model` as an OpenVINO IR at `out` (.xml, weights in .bin).

    Returns the graph and how many MatMuls are INT8 and how many stay accurate.
    """
    import openvino as ov

    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out.with_suffix(".xml")), compress_to_fp16=False)
    int8 = _quantized_matmuls(model)
    total = sum(1 for op in model.get_ordered_ops() if op.get_type_name() == "MatMul")
    return GraphFile(out.with_suffix(".xml"), Backend.OPENVINO, precision_for(cpu)), int8, total - int8


def ffn_out_matmuls(exported: Path) -> list[str]:
    """Names of the feed-forward output projections: MatMuls whose weight maps a wider input back down
    (intermediate → hidden). They are the same names in the OpenVINO model read from this file."""
    import onnx

    model = onnx.load(str(exported), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and len(shapes.get(node.input[1], ())) == 2
        and shapes[node.input[1]][0] > shapes[node.input[1]][1]
    ]


def _quantized_matmuls(model: Any) -> int:
    """MatMuls with a FakeQuantize on an input: those NNCF made INT8."""
    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        sources = [op.input_value(i).get_node() for i in range(op.get_input_size())]
        if any(_behind_fake_quantize(node) for node in sources):
            count += 1
    return count


def _behind_fake_quantize(node: Any, depth: int = 3) -> bool:
    for _ in range(depth):
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_input_size() == 0:
            return False
        node = node.input_value(0).get_node()
    return False
