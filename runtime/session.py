"""onnxruntime sessions: execution provider choice, threads, TensorRT options, readable load errors."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .cpu import default_threads
from .errors import ArtifactError, OptionError, ProviderError

log = logging.getLogger("bertx")


class Device(str, Enum):
    """Where the model runs; auto picks CUDA when onnxruntime can use it, else the CPU. openvino runs on
    the CPU through OpenVINO (extra `bertx[openvino]`)."""

    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"
    OPENVINO = "openvino"
    AUTO = "auto"


PROVIDERS = {
    Device.CPU: "CPUExecutionProvider",
    Device.CUDA: "CUDAExecutionProvider",
    Device.TENSORRT: "TensorrtExecutionProvider",
}


class FallbackWarning(UserWarning):
    """The requested execution provider was unavailable and the CPU is used instead."""


@dataclass(frozen=True)
class TensorRTSettings:
    """What the TensorRT provider needs to build engines for an artifact.

    Engines are cached in `cache_dir` (inside the artifact folder by default), so they are built once
    per machine. The optimization profile covers batches of 1 … `max_batch` texts of 1 … `max_length`
    tokens, tuned for `opt_length`.
    """

    cache_dir: Path
    input_names: tuple[str, ...]
    max_batch: int
    max_length: int
    opt_length: int = 128
    fp16: bool = False
    int8: bool = False

    def provider_options(self) -> dict[str, str]:
        """The TensorrtExecutionProvider options, as onnxruntime takes them (strings)."""
        if not 1 <= self.opt_length <= self.max_length or self.max_batch < 1:
            raise OptionError(
                f"TensorRT profile needs 1 ≤ opt_length ≤ max_length and max_batch ≥ 1, got "
                f"opt_length={self.opt_length}, max_length={self.max_length}, max_batch={self.max_batch}"
            )

        def shapes(batch: int, length: int) -> str:
            return ",".join(f"{name}:{batch}x{length}" for name in self.input_names)

        return {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(self.cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(self.cache_dir),
            "trt_fp16_enable": str(self.fp16),
            "trt_int8_enable": str(self.int8),
            "trt_profile_min_shapes": shapes(1, 1),
            "trt_profile_opt_shapes": shapes(self.max_batch, self.opt_length),
            "trt_profile_max_shapes": shapes(self.max_batch, self.max_length),
        }


def resolve_threads(threads: int | None) -> int | None:
    """The threads an engine gets: `threads` when given (a positive integer, else an `OptionError`), else
    the CPUs the process may use when its affinity or cgroup quota restricts it, else None (the
    engine's own choice)."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise OptionError(f"threads must be a positive integer, got {threads!r}")
    return threads


def resolve_device(device: Device) -> Device:
    """Turn `auto` into the best device onnxruntime offers here (CUDA, else CPU), and log the choice."""
    if device is not Device.AUTO:
        return device
    chosen = Device.CUDA if PROVIDERS[Device.CUDA] in ort.get_available_providers() else Device.CPU
    log.info("bertx: device auto → %s (available providers: %s)", chosen.value, ort.get_available_providers())
    return chosen


def create_session(
    path: Path,
    device: Device = Device.CPU,
    threads: int | None = None,
    allow_fallback: bool = False,
    tensorrt: TensorRTSettings | None = None,
    cpu_arena: bool = True,
) -> ort.InferenceSession:
    """Open an ONNX file on the requested device.

    Asking for CUDA or TensorRT where onnxruntime cannot use it raises `ProviderError` unless
    `allow_fallback` is set, in which case the CPU is used and a `FallbackWarning` says so.
    `cpu_arena=False` returns memory to the system between calls (smaller peak, a little slower).
    `threads=None` uses the CPUs the process may use when its affinity or cgroup quota restricts it,
    else onnxruntime's own choice.
    """
    threads = resolve_threads(threads)
    device = resolve_device(device)
    if device not in PROVIDERS:
        raise OptionError(f"device {device.value!r} is not an onnxruntime execution provider")
    providers = _providers(device, allow_fallback, tensorrt)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = cpu_arena
    # onnxruntime keeps a memory plan per distinct input shape; with texts of every length those plans
    # pile up and over-reserve (60 MB more at peak for all-MiniLM-L6-v2) for no measurable speed.
    options.enable_mem_pattern = False
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
    first = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if first != "CPUExecutionProvider" and first not in session.get_providers():
        # onnxruntime falls back to the CPU silently when the CUDA libraries fail to load.
        if not allow_fallback:
            raise ProviderError(
                f"{first} is listed but failed to initialise (CUDA, cuDNN or TensorRT libraries missing or "
                "not matching onnxruntime-gpu); pass allow_fallback=True to run on the CPU instead"
            )
        warnings.warn(f"{first} failed to initialise; running on the CPU", FallbackWarning, stacklevel=3)
    return session


def _providers(device: Device, allow_fallback: bool, tensorrt: TensorRTSettings | None) -> list[Any]:
    available = ort.get_available_providers()
    if device is Device.CPU:
        return ["CPUExecutionProvider"]
    wanted = PROVIDERS[device]
    if wanted in available:
        if device is Device.TENSORRT:
            if tensorrt is None:
                raise OptionError("the TensorRT provider needs TensorRTSettings (Model builds them from the artifact)")
            tensorrt.cache_dir.mkdir(parents=True, exist_ok=True)
            return [(wanted, tensorrt.provider_options()), "CUDAExecutionProvider", "CPUExecutionProvider"]
        return [wanted, "CPUExecutionProvider"]
    if allow_fallback:
        warnings.warn(f"{wanted} is not available; running on the CPU", FallbackWarning, stacklevel=4)
        return ["CPUExecutionProvider"]
    raise ProviderError(
        f"{wanted} is not available in this onnxruntime {ort.__version__} (available: {', '.join(available)}). "
        "Install onnxruntime-gpu instead of onnxruntime for CUDA/TensorRT, or use device='cpu' / allow_fallback=True"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
