"""Graph fusion through Optimum's ORTOptimizer, for the fp32 variant and the fp16 one (fp32 I/O); for the types
ONNX Runtime's optimizer does not know, the exported graph as it is (and its fp16 conversion)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

from bertx.architectures import supported_type
from bertx.errors import ExportError

from .onnx_export import quiet


class OptimizeLevel(str, Enum):
    """Optimum's graph optimization presets (O3 adds the GELU approximation, which moves values)."""

    O1 = "O1"
    O2 = "O2"
    O3 = "O3"


def fuse(
    exported_dir: Path, level: OptimizeLevel, out_dir: Path, fp16: bool = False, model_type: str = "bert"
) -> tuple[Path, dict[str, Any]]:
    """Apply ONNX Runtime graph fusion to `exported_dir/model.onnx`; with `fp16`, also convert the
    weights and compute to float16 while keeping float32 inputs and outputs. A `model_type` the optimizer
    does not know is left unfused (and only converted for `fp16`).

    Returns the optimized file and the settings to record in the manifest.
    """
    unfused = supported_type(model_type).unfused
    if unfused is not None:
        return _unfused(exported_dir / "model.onnx", out_dir, fp16, unfused)
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    config = AutoOptimizationConfig.with_optimization_level(level.value, for_gpu=fp16)
    if fp16:
        config.fp16 = True
    try:
        with quiet():
            optimizer = ORTOptimizer.from_pretrained(exported_dir, file_names=["model.onnx"])
            optimizer.optimize(config, save_dir=out_dir, file_suffix=None)
    except Exception as exc:  # ORT's fusion scripts raise assorted errors; name the step that failed
        raise ExportError(f"graph optimization {level.value}{' fp16' if fp16 else ''} failed: {exc}") from exc
    settings = {
        "tool": "optimum ORTOptimizer",
        "level": level.value,
        "optimization_level": config.optimization_level,
        "transformers_fusions": config.enable_transformers_specific_optimizations,
        "gelu_approximation": config.enable_gelu_approximation,
        "fp16": fp16,
        "keep_io_types": fp16,
    }
    return out_dir / "model.onnx", settings


def _unfused(exported: Path, out_dir: Path, fp16: bool, why: str) -> tuple[Path, dict[str, Any]]:
    """The exported graph unfused, in `out_dir`; with `fp16`, its weights and compute in float16 and its inputs
    and outputs kept float32, as the fused fp16 variant has them."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.onnx"
    try:
        with quiet():
            model = onnx.load(str(exported))
            if fp16:
                wrapped = OnnxModel(model)
                wrapped.convert_float_to_float16(keep_io_types=True)
                model = wrapped.model
            onnx.save(model, str(target))
    except Exception as exc:  # onnx and ORT's converter raise assorted errors; name the step that failed
        raise ExportError(f"{'fp16 conversion' if fp16 else 'copying the unfused graph'} failed: {exc}") from exc
    settings = {"tool": "none", "level": "unfused", "unfused": why, "fp16": fp16, "keep_io_types": fp16}
    return target, settings
