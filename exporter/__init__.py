"""bertx.exporter: BERT-family models to ONNX with every hidden state, fused, INT8 and FP16, checked
against PyTorch. Needs the `export` extra: pip install 'bertx[export]'."""

from __future__ import annotations

import importlib.util

from bertx.errors import MissingDependencyError

_REQUIRED = {
    "torch": "torch",
    "transformers": "transformers",
    "optimum.onnxruntime": "optimum-onnx",
    "onnx": "onnx",
    "onnx_ir": "onnx-ir",
}


def _check_dependencies() -> None:
    missing = []
    for module, package in _REQUIRED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    if missing:
        raise MissingDependencyError(
            f"bertx export needs {', '.join(missing)}: install with "
            "`pip install torch==2.13.0 && pip install 'bertx[export]'` (torch first, so a CPU build is used)"
        )


_check_dependencies()

from .int8 import Int8Options  # noqa: E402
from .parity import parse_thresholds  # noqa: E402
from .pipeline import ExportOptions, ExportResult, export_model  # noqa: E402
from .variants import OptimizeLevel  # noqa: E402

__all__ = ["ExportOptions", "ExportResult", "Int8Options", "OptimizeLevel", "export_model", "parse_thresholds"]
