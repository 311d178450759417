"""onnxruntime sessions: execution provider choice, threads, and readable load errors."""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path

import onnxruntime as ort

from .errors import ArtifactError, ProviderError


class Device(str, Enum):
    """Where the model runs."""

    CPU = "cpu"
    CUDA = "cuda"


_PROVIDERS = {Device.CPU: "CPUExecutionProvider", Device.CUDA: "CUDAExecutionProvider"}


class FallbackWarning(UserWarning):
    """The requested execution provider was unavailable and the CPU is used instead."""


def create_session(
    path: Path,
    device: Device = Device.CPU,
    threads: int | None = None,
    allow_fallback: bool = False,
) -> ort.InferenceSession:
    """Open an ONNX file on the requested device.

    Asking for CUDA where onnxruntime cannot use it raises `ProviderError` unless `allow_fallback`
    is set, in which case the CPU is used and a `FallbackWarning` says so.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    providers = _providers(device, allow_fallback)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises pybind11 types (InvalidProtobuf, Fail, ...) not exported
        raise ArtifactError(
            f"onnxruntime {ort.__version__} cannot load {path.name}: {_first_line(exc)}. "
            "The file is corrupt or was written by a newer exporter; re-export the model"
        ) from exc
    if device is Device.CUDA and _PROVIDERS[device] not in session.get_providers():
        # onnxruntime falls back to the CPU silently when the CUDA libraries fail to load.
        if not allow_fallback:
            raise ProviderError(
                "CUDAExecutionProvider is listed but failed to initialise (CUDA or cuDNN libraries missing "
                "or not matching onnxruntime-gpu); pass allow_fallback=True to run on the CPU instead"
            )
        warnings.warn("CUDA provider failed to initialise; running on the CPU", FallbackWarning, stacklevel=3)
    return session


def _providers(device: Device, allow_fallback: bool) -> list[str]:
    available = ort.get_available_providers()
    if device is Device.CPU:
        return ["CPUExecutionProvider"]
    wanted = _PROVIDERS[device]
    if wanted in available:
        return [wanted, "CPUExecutionProvider"]
    if allow_fallback:
        warnings.warn(f"{wanted} is not available; running on the CPU", FallbackWarning, stacklevel=4)
        return ["CPUExecutionProvider"]
    raise ProviderError(
        f"{wanted} is not available in this onnxruntime {ort.__version__} (available: {', '.join(available)}). "
        "Install onnxruntime-gpu instead of onnxruntime for CUDA, or use device='cpu' / allow_fallback=True"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
