"""`bertx doctor`: what this machine can run — versions, execution providers that really load, CPU
features and the INT8 preset they suit, the CPUs this process may use, and packages that break each other."""

from __future__ import annotations

import base64
import os
import platform
from dataclasses import dataclass
from importlib import metadata

import onnxruntime as ort

from .cpu import CpuBudget, CpuInfo, cpu_budget, cpu_info

# A one-node ONNX graph (y = Identity(x), opset 13), small enough to keep inline: each provider is
# asked to load it, because onnxruntime lists providers whose libraries may still fail to load.
_PROBE = base64.b64decode(
    "CAg6OwoQCgF4EgF5IghJZGVudGl0eRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAN"
)
_PACKAGES = (
    "bertx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
    "tokenizers",
    "numpy",
    "torch",
    "transformers",
    "optimum-onnx",
)


@dataclass(frozen=True)
class ProviderCheck:
    """Whether one listed execution provider really loads a model here."""

    name: str
    works: bool
    detail: str


@dataclass(frozen=True)
class Diagnosis:
    """Everything `bertx doctor` reports."""

    python: str
    versions: dict[str, str | None]
    providers: tuple[ProviderCheck, ...]
    cpu: CpuInfo
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    openvino: str
    cpus: CpuBudget


def diagnose() -> Diagnosis:
    """Inspect this machine; never raises for a missing optional package or a broken provider."""
    versions = {name: _version(name) for name in _PACKAGES}
    problems = []
    if versions["onnxruntime"] and versions["onnxruntime-gpu"]:
        problems.append(
            "onnxruntime and onnxruntime-gpu are both installed; they provide the same module and break each "
            "other: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
        )
    checks = tuple(_check(name) for name in ort.get_available_providers())
    problems += [f"{c.name} is listed but does not load: {c.detail}" for c in checks if not c.works]
    cpu = cpu_info()
    notes = []
    if cpu.machine in ("x86_64", "amd64") and not cpu.vnni:
        notes.append(
            "no VNNI: dynamic INT8 loses accuracy here, so `bertx export --int8` keeps its most sensitive "
            "layers in fp32 (the search is shown by `bertx info`)"
        )
    if not any(c.works and c.name in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for c in checks):
        notes.append("CPU only: install onnxruntime-gpu (instead of onnxruntime) for the CUDA provider")
    if isa := os.environ.get("ONEDNN_MAX_CPU_ISA"):
        notes.append(
            f"ONEDNN_MAX_CPU_ISA={isa}: OpenVINO (oneDNN) is held to that instruction set, not this CPU's best; "
            "its speeds and INT8/bf16 results are that class's (its compiled models are cached apart)"
        )
    if cpu.bf16 and not versions["openvino"]:
        notes.append("this CPU computes bf16: pip install 'bertx[openvino]' for the bf16 variant (about 2× fp32)")
    return Diagnosis(
        platform.python_version(), versions, checks, cpu, tuple(problems), tuple(notes), _openvino(), cpu_budget()
    )


def _openvino() -> str:
    """Whether OpenVINO's CPU plugin loads, and the precisions it offers here."""
    try:
        import openvino
    except ImportError:
        return "not installed (pip install 'bertx[openvino]')"
    try:
        capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError as exc:  # the CPU plugin failed to load
        return f"installed, CPU plugin fails: {(str(exc).strip().splitlines() or ['?'])[0]}"
    offered = [name for name in ("FP32", "BF16", "INT8") if name in capabilities]
    return f"CPU plugin loads: {', '.join(offered)}"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _check(provider: str) -> ProviderCheck:
    try:
        session = ort.InferenceSession(_PROBE, providers=[provider])
    except Exception as exc:  # a provider failing to load raises various pybind11 errors
        return ProviderCheck(provider, False, (str(exc).strip().splitlines() or [type(exc).__name__])[0])
    active = session.get_providers()
    if provider not in active:
        return ProviderCheck(provider, False, f"onnxruntime fell back to {', '.join(active)}")
    return ProviderCheck(provider, True, "loads")
