"""OpenVINO as a backend: the same artifact files (ONNX or OpenVINO IR) on Intel's CPU runtime.

OpenVINO reads bertx's fused ONNX as it is, computes in bf16 on CPUs that have the instructions, and
runs the INT8 graphs NNCF writes. The precision is always set explicitly: left alone, OpenVINO picks
bf16 by itself on such CPUs, which would make an "fp32" result silently less exact.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path
from typing import Any

import numpy as np

from .backends import InferencePrecision, RunOptions
from .errors import ArtifactError, MissingDependencyError, OptionError
from .session import Device, resolve_threads

INSTALL = "pip install 'bertx[openvino]'"
# OpenVINO's CPU plugin keeps the kernels it prepared for each input shape it has seen, up to 5,000
# shapes by default. A server's batches come in ever new shapes (texts × length): over a 5-minute load
# test that cache took a MiniLM INT8 server from 265 MB to 1.67 GB. 256 shapes bound it and still hold
# every length of batch-1 calls (a miss costs about 4 ms).
RUNTIME_CACHE_SHAPES = 256


def import_openvino() -> Any:
    """The openvino module, or a `MissingDependencyError` naming the install command."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError(f"the OpenVINO backend needs the openvino package: {INSTALL}") from exc
    return openvino


class OpenVINORunner:
    """A graph compiled by OpenVINO for the CPU, with one infer request per concurrent caller.

    Compiled models are cached (OpenVINO's CACHE_DIR, keyed by the file and the settings), so a second
    start of the same artifact skips the compile. Outputs are shared with the request and only the
    requested ones are copied out.
    """

    device = Device.OPENVINO

    def __init__(self, path: Path, precision: InferencePrecision, options: RunOptions) -> None:
        if options.device not in (Device.OPENVINO, Device.CPU, Device.AUTO):
            raise OptionError(f"an OpenVINO graph runs with device='openvino', not {options.device.value!r}")
        ov = import_openvino()
        threads = resolve_threads(options.threads)
        core = ov.Core()
        if precision is InferencePrecision.BF16 and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise OptionError(
                "this CPU has no bf16 instructions (AVX-512 BF16 or AMX), so OpenVINO cannot run the bf16 "
                "variant here; use the fp32 or int8 variant"
            )
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision.value,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_SHAPES,
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        cache = _cache_dir(options.cache_dir) if options.cache_dir is not None else None
        if cache is not None:
            config["CACHE_DIR"] = str(cache)
        try:
            self._compiled = core.compile_model(str(path), "CPU", config)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(
                f"OpenVINO {ov.get_version().split('-')[0]} cannot load {path.name}: {first}. "
                "A graph built for onnxruntime's INT8 kernels runs on onnxruntime only (device='cpu')"
            ) from exc
        self.precision = precision
        self._inputs = tuple(port.get_any_name() for port in self._compiled.inputs)
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            request.infer(feeds, share_inputs=True, share_outputs=True)
            return [np.array(request.get_tensor(name).data, dtype=np.float32) for name in outputs]
        finally:
            self._requests.put(request)


def _cache_dir(wanted: Path) -> Path | None:
    """Where compiled models are cached: `wanted` (the artifact's `ov-cache/`) when it can be written, else
    the user's cache folder; None when no folder can be written. Without a wanted folder nothing is cached,
    so the exporter's own runs leave no machine-specific blobs in the artifact it writes."""
    for folder in (wanted, _user_cache() / "openvino"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return None


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bertx"
