"""OpenVINO as a backend: the same artifact files (ONNX or OpenVINO IR) on Intel's CPU runtime.

OpenVINO reads bertx's fused ONNX as it is, computes in bf16 on CPUs that have the instructions, and
runs the INT8 graphs NNCF writes. The precision is always set explicitly: left alone, OpenVINO picks
bf16 by itself on such CPUs, which would make an "fp32" result silently less exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .cpu import cpu_info
from .errors import ArtifactError, MissingDependencyError, NonFiniteError, OptionError
from .runner import InferencePrecision, RunOptions
from .session import Device, resolve_threads

logger = logging.getLogger("bertx")

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
            cache = cache / cache_key(ov.get_version(), config)
        self._compiled = _compile(core, path, config, cache)
        self._inputs = tuple(port.get_any_name() for port in self._compiled.inputs)
        if cache is not None and not _finite_probe(self._compiled, self._inputs):
            # A blob that loads but computes garbage (one written for other settings, or by a build whose
            # kernels differ) must never serve: drop it, compile afresh and check again.
            logger.warning("OpenVINO's cached %s compile of %s returned NaN; rebuilding it", precision.value, path.name)
            shutil.rmtree(cache, ignore_errors=True)
            self._compiled = _compile(core, path, config, cache)
        if not _finite_probe(self._compiled, self._inputs):
            raise NonFiniteError(
                f"OpenVINO {ov.get_version().split('-')[0]} computes NaN or infinity for {path.name} in "
                f"{precision.value} on this CPU ({cpu_info().model}); use another variant or device='cpu'"
            )
        self.precision = precision
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


def cache_key(version: str, config: dict[str, Any]) -> str:
    """The folder, inside the cache, for compiles of one OpenVINO build, CPU and set of settings.

    OpenVINO's own blob key does not cover every setting: a blob written by an f32 compile was found
    and used by a later bf16 compile of the same file, which then returned NaN for every text. Each
    combination of version, CPU flags and compile settings therefore gets a folder of its own, and so does a
    process whose oneDNN is held to an older instruction set (`ONEDNN_MAX_CPU_ISA`), whose kernels differ.
    """
    cpu = cpu_info()
    facts = {"openvino": version, "cpu": cpu.model, "flags": cpu.flags_key, "config": config}
    if isa := os.environ.get("ONEDNN_MAX_CPU_ISA"):  # only when set: the folders of uncapped compiles stay put
        facts["isa"] = isa
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    precision = str(config.get("INFERENCE_PRECISION_HINT", "default"))
    return f"{version.split('-')[0]}-{precision}-{digest}"


def _compile(core: Any, path: Path, config: dict[str, Any], cache: Path | None) -> Any:
    """Compile `path` (through the cache folder when there is one). A cached blob that fails to load is
    deleted and the model compiled again from the file."""
    import openvino as ov

    settings = dict(config, CACHE_DIR=str(cache)) if cache is not None else config
    try:
        return core.compile_model(str(path), "CPU", settings)
    except RuntimeError as exc:
        if cache is not None and cache.is_dir():
            logger.warning("OpenVINO could not use its cached compile of %s (%s); rebuilding it", path.name, exc)
            shutil.rmtree(cache, ignore_errors=True)
            try:
                return core.compile_model(str(path), "CPU", settings)
            except RuntimeError as again:
                exc = again
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(
            f"OpenVINO {ov.get_version().split('-')[0]} cannot load {path.name}: {first}. "
            "A graph built for onnxruntime's INT8 kernels runs on onnxruntime only (device='cpu')"
        ) from exc


def _finite_probe(compiled: Any, inputs: tuple[str, ...]) -> bool:
    """Whether one short batch of two texts, the second padded, comes out finite on every output (token
    ids small enough for any vocabulary)."""
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=np.int64)
    ids = np.array([[2, 5, 7, 3], [2, 3, 1, 1]], dtype=np.int64)
    feeds = {}
    for name in inputs:
        if name == "attention_mask":
            feeds[name] = mask
        elif name == "input_ids":
            feeds[name] = ids
        else:
            feeds[name] = np.zeros_like(ids)
    request = compiled.create_infer_request()
    request.infer(feeds)
    return all(bool(np.isfinite(request.get_tensor(port).data).all()) for port in compiled.outputs)


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
