"""Graph fusion through Optimum's ORTOptimizer, for the fp32 variant and the fp16 one (fp32 I/O)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

from bertx.errors import ExportError

from .onnx_export import quiet


class OptimizeLevel(str, Enum):
    """Optimum's graph optimization presets (O3 adds the GELU approximation, which moves values)."""

    O1 = "O1"
    O2 = "O2"
    O3 = "O3"


def fuse(exported_dir: Path, level: OptimizeLevel, out_dir: Path, fp16: bool = False) -> tuple[Path, dict[str, Any]]:
    """Apply ONNX Runtime graph fusion to `exported_dir/model.onnx`; with `fp16`, also convert the
    weights and compute to float16 while keeping float32 inputs and outputs.

    Returns the optimized file and the settings to record in the manifest.
    """
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
