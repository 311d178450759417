"""Loading an artifact: which variant, on which engine (the manifest's own pairing, a device the caller
asked for, or `variant="auto"`, the export's recommendation where this machine can run it), with the
files checked against the manifest before anything runs."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .artifact import check_file, load_tokenizer
from .backends import Backend, GraphFile, InferencePrecision, Runner, RunOptions, open_graph
from .batching import DEFAULT_BATCH_TOKENS, check_batch_tokens
from .errors import ArtifactError, OptionError, caller_stacklevel
from .manifest import Manifest, Precision, Variant
from .options import choice
from .session import Device, FallbackWarning, TensorRTSettings, resolve_device
from .tokenization import TextEncoder

AUTO = "auto"


@dataclass(frozen=True)
class LoadOptions:
    """How to load an artifact (see `Model.from_pretrained` for each field); checked when made.

    `batch_tokens` None (or 0, as the command line writes it) batches by text count only.
    """

    variant: Precision | str = Precision.FP32
    device: Device | str | None = None
    threads: int | None = None
    allow_fallback: bool = False
    max_batch_size: int = 32
    cpu_arena: bool = True
    batch_tokens: int | None = DEFAULT_BATCH_TOKENS
    verify: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.variant, str):  # which variants exist is the artifact's to say (VariantError)
            raise OptionError(f"variant must be a name such as 'int8' or 'auto', got {self.variant!r}")
        if self.device is not None:
            object.__setattr__(self, "device", choice(Device, self.device, "device"))
        for name in ("threads", "max_batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        for name in ("allow_fallback", "cpu_arena", "verify"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be true or false, got {getattr(self, name)!r}")
        object.__setattr__(self, "batch_tokens", check_batch_tokens(self.batch_tokens))


@dataclass(frozen=True)
class Loaded:
    """An artifact opened for inference: its manifest, the variant chosen, its tokenizer and its runner."""

    path: Path
    manifest: Manifest
    variant: Variant
    tokenizer: TextEncoder
    runner: Runner


def load_artifact(path: str | os.PathLike[str], options: LoadOptions) -> Loaded:
    """Open the variant `options` asks for, after checking its files (size, and sha256 unless `verify` is off).

    Raises:
        ArtifactError: a missing or inconsistent file. VariantError: a variant the artifact lacks.
        ProviderError / OptionError: a device that cannot run the variant.
    """
    folder = Path(path)
    manifest = Manifest.load(folder)
    precision = auto_variant(manifest, options.device) if options.variant == AUTO else options.variant
    variant = manifest.variant(precision)
    graph = variant_graph(folder, variant)
    requested = device_for(variant, graph, options.device)
    what = variant.precision.value
    check_file(graph.path, variant.size_bytes, f"{what} model", variant.sha256 if options.verify else None)
    for name, facts in variant.extra_files.items():
        digest = str(facts["sha256"]) if options.verify else None
        check_file(folder / name, int(facts["size_bytes"]), f"{what} weights", digest)
    tokenizer = load_tokenizer(folder, manifest)
    tensorrt = TensorRTSettings(
        cache_dir=folder / "trt-cache" / variant.precision.value,
        input_names=manifest.inputs,
        max_batch=options.max_batch_size,
        max_length=tokenizer.max_length,
        opt_length=min(128, tokenizer.max_length),
        fp16=variant.precision is Precision.FP16,
        int8=variant.precision is Precision.INT8,
    )
    if requested is Device.OPENVINO:
        graph = GraphFile(graph.path, Backend.OPENVINO, graph.precision or InferencePrecision.F32)
    run = RunOptions(
        requested, options.threads, options.allow_fallback, tensorrt, options.cpu_arena, folder / "ov-cache"
    )
    runner = open_graph(graph, run)
    declared = set(runner.input_names)
    if declared != set(manifest.inputs):
        raise ArtifactError(
            f"{variant.file} takes inputs {sorted(declared)} but the manifest says "
            f"{sorted(manifest.inputs)}; the artifact folder is inconsistent, re-export it"
        )
    return Loaded(folder, manifest, variant, tokenizer, runner)


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
