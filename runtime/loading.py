"""Which variant of an artifact to load, and on which engine: the manifest's own pairing, a device the
caller asked for, or `variant="auto"`, the export's recommendation where this machine can run it."""

from __future__ import annotations

import warnings
from pathlib import Path

from .backends import Backend, GraphFile, InferencePrecision
from .errors import OptionError, caller_stacklevel
from .manifest import Manifest, Precision, Variant
from .options import choice
from .session import Device, FallbackWarning, resolve_device

AUTO = "auto"


def auto_variant(manifest: Manifest, device: Device | str | None) -> Precision:
    """The variant `variant="auto"` loads: the manifest's recommendation when this CPU and installation can
    run it, else the next of its ranking that can (with a `FallbackWarning`), else fp32."""
    recommended = manifest.recommended
    if recommended is None:
        return Precision.FP32
    if device is not None and str(getattr(device, "value", device)) not in ("cpu", "openvino", "auto"):
        return Precision.FP32  # the recommendation was measured on a CPU
    reasons: list[str] = []
    for precision in recommended.ranking:
        if precision not in manifest.variants:
            continue
        why = _cannot_run(manifest.variants[precision])
        if why is None:
            if reasons:
                warnings.warn(
                    f"variant='auto': {'; '.join(reasons)}; loading the {precision.value} variant instead",
                    FallbackWarning,
                    stacklevel=caller_stacklevel(),
                )
            return precision
        reasons.append(f"the {precision.value} variant {why}")
    return Precision.FP32


def _cannot_run(variant: Variant) -> str | None:
    """Why this machine cannot run a variant (OpenVINO missing, no bf16 instructions), or None."""
    import importlib.util

    from .cpu import cpu_info

    if variant.backend == Backend.OPENVINO.value and importlib.util.find_spec("openvino") is None:
        return "needs OpenVINO (pip install 'bertx[openvino]')"
    if variant.inference_precision == InferencePrecision.BF16.value and not cpu_info().bf16:
        return "needs bf16 instructions (AVX-512 BF16 or AMX), which this CPU lacks"
    return None


def variant_graph(folder: Path, variant: Variant) -> GraphFile:
    """The graph file of a variant and the engine (and precision) the manifest says it is made for."""
    backend = choice(Backend, variant.backend, "backend")
    precision = None if variant.inference_precision is None else InferencePrecision(variant.inference_precision)
    return GraphFile(folder / variant.file, backend, precision)


def device_for(variant: Variant, graph: GraphFile, device: Device | str | None) -> Device:
    """The device asked for, or the variant's own engine; refuses a pairing that cannot run."""
    if device is None:
        return Device.OPENVINO if graph.backend is Backend.OPENVINO else Device.CPU
    requested = resolve_device(choice(Device, device, "device"))
    if graph.backend is Backend.OPENVINO and requested is not Device.OPENVINO:
        raise OptionError(
            f"the {variant.precision.value} variant is built for OpenVINO ({variant.file}); "
            f"load it with device='openvino' (or leave device unset), not {requested.value!r}"
        )
    return requested
