"""INT8 candidates for OpenVINO, built by NNCF, measured in the same search as onnxruntime's.

NNCF's post-training quantization (`model_type=TRANSFORMER`, which also smooths with NNCF's own α
unless a recipe sets one) inserts static (calibrated) INT8 quantizers into an OpenVINO model
read from the plain exported ONNX (NNCF cannot yet read the graph that onnxruntime's fusions wrote).
What is not quantized runs in bf16 on CPUs that compute it, else in f32, so keeping a sensitive node
out of INT8 costs less here than on onnxruntime. The recipes reuse the ideas the onnxruntime search
uses: activation smoothing (NNCF's SmoothQuant) and keeping the most harmful nodes accurate, here the
feed-forward output projections, whose input carries per-token outliers that no static scale covers.
When none of the fixed recipes meets the target, `openvino-mixed-K` also keeps the K nodes the
onnxruntime search ranked most sensitive out of INT8 (a fused Attention stands for the MatMuls it
absorbed), for growing K, as the onnxruntime ladder does.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertx.backends import Backend, GraphFile, InferencePrecision
from bertx.cpu import CpuInfo
from bertx.errors import ExportError
from bertx.tokenization import Batch

from .onnx_export import quiet

PREFIX = "openvino-"
MIXED = f"{PREFIX}mixed-"
SMOOTH_ALPHA = 0.5
MAX_MIXED_NODES = 8  # the ladder's last step: each costs an NNCF build, and the graph nears plain bf16


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
    """The OpenVINO recipes worth measuring on this CPU (none where OpenVINO cannot run them)."""
    return [] if unavailable(cpu) else list(RECIPES)


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


def ladder(exported: Path, fused: Path, ranking: Sequence[str]) -> list[list[str]]:
    """The steps of the `openvino-mixed-K` ladder: `plain_nodes` of the ranking, without the feed-forward
    output projections, which every mixed recipe keeps out of INT8 already."""
    kept = set(ffn_out_matmuls(exported))
    return [group for group in plain_nodes(exported, fused, ranking) if not set(group) <= kept]


def plain_nodes(exported: Path, fused: Path, ranking: Sequence[str]) -> list[list[str]]:
    """The plain graph's MatMuls behind each node of `ranking` (node names of the fused graph, most
    sensitive first), in that order. A MatMul keeps its name through the fusions; a fused Attention
    stands for the MatMuls of its layer that the fusion absorbed (query, key, value and the two
    attention products). Nodes with no counterpart are left out."""
    import onnx

    plain = [n.name for n in onnx.load(str(exported), load_external_data=False).graph.node if n.op_type == "MatMul"]
    fused_nodes = onnx.load(str(fused), load_external_data=False).graph.node
    fused_names = {node.name for node in fused_nodes}
    attentions = [node.name for node in fused_nodes if node.op_type == "Attention"]
    absorbed: dict[int, list[str]] = {}
    for name in plain:
        layer = re.search(r"layer\.(\d+)/", name)
        if name not in fused_names and layer is not None:
            absorbed.setdefault(int(layer.group(1)), []).append(name)
    groups = [absorbed[layer] for layer in sorted(absorbed)]
    out: list[list[str]] = []
    for name in ranking:
        if name in attentions and len(groups) == len(attentions):
            out.append(groups[attentions.index(name)])
        elif name in plain:
            out.append([name])
    return out


def precision_for(cpu: CpuInfo) -> InferencePrecision:
    """What the non-INT8 part computes in: bf16 where the CPU has it."""
    return InferencePrecision.BF16 if cpu.bf16 else InferencePrecision.F32


def build(
    recipe: OpenVINORecipe,
    exported: Path,
    out: Path,
    calibration: Sequence[Batch],
    input_names: Sequence[str],
    cpu: CpuInfo,
    ranked: Sequence[Sequence[str]] = (),
) -> tuple[GraphFile, int, int]:
    """Quantize `exported` (plain ONNX) with NNCF into an OpenVINO IR at `out` (.xml, weights in .bin).
    `ranked`: the plain graph's MatMuls of each node, most sensitive first (`ladder`), for mixed recipes.

    Returns the graph and how many MatMuls are INT8 and how many stay accurate.
    """
    reason = unavailable(cpu)
    if reason is not None:
        raise ExportError(f"cannot build {recipe.name}: {reason}")
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)  # its progress bars would break the export's own progress lines
    kept = ffn_out_matmuls(exported) if recipe.keep_ffn_out else []
    for group in ranked[: recipe.accurate_nodes]:
        kept += [name for name in group if name not in kept]
    advanced = nncf.AdvancedQuantizationParameters()
    if recipe.smooth_alpha is not None:
        advanced.smooth_quant_alphas = nncf.AdvancedSmoothQuantParameters(matmul=recipe.smooth_alpha)
    model = ov.Core().read_model(str(exported))
    dataset = nncf.Dataset([batch.feeds(input_names) for batch in calibration])
    try:
        # NNCF draws its own progress bars on stdout, which the export's progress lines own.
        with quiet(), contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(
                model,
                dataset,
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(calibration),
                ignored_scope=nncf.IgnoredScope(names=kept, validate=False),
                advanced_parameters=advanced,
            )
    except Exception as exc:  # NNCF raises its own and OpenVINO's errors; name the recipe that failed
        raise ExportError(f"NNCF could not quantize for {recipe.name}: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out.with_suffix(".xml")), compress_to_fp16=False)
    int8 = _quantized_matmuls(quantized)
    total = sum(1 for op in quantized.get_ordered_ops() if op.get_type_name() == "MatMul")
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
