"""`export_model`: resolve, export, fuse, quantize, validate and write an artifact folder atomically.

Everything is written into a hidden folder beside the target and renamed into place only when every
step (and the parity gate) succeeded. A failure or an interrupt removes that folder, and an existing
artifact is never touched without `force`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

import bertx
from bertx.architectures import supported_type
from bertx.backends import Backend, GraphFile, InferencePrecision
from bertx.cpu import cpu_info
from bertx.display import parity_table
from bertx.errors import ExportError, ParityError, UnsupportedModelError
from bertx.manifest import (
    Manifest,
    ParityReport,
    Pooling,
    Precision,
    SentenceEmbeddingOutput,
    Source,
    Thresholds,
    Variant,
)
from bertx.tokenization import Batch, TextEncoder

from .artifact_facts import export_facts, print_summary, write_tokenizer
from .atomic import check_target, move_into_place, remove_stale_partials, scratch_folder, sigterm_as_interrupt
from .graph_pooling import GRAPH_POOLINGS, SENTENCE_EMBEDDING, add_sentence_embedding
from .int8 import Int8Options, calibration_texts, make_context
from .int8_openvino import named as openvino_named
from .int8_openvino import refused as openvino_refused
from .int8_quantize import quantize_int8, timed_by_recommendation
from .int8_recipes import named_recipe
from .onnx_export import export_onnx, onnx_io_names, output_names, quiet, read_model_facts, with_prompts
from .parity import DEFAULT_THRESHOLDS, check_parity
from .proof import build_proof, proof_texts
from .recommend import ROUNDS as RECOMMEND_ROUNDS
from .recommend import cpu_variants, recommend
from .resolve import ResolvedModel, resolve_model, sha256_file
from .variants import OptimizeLevel, fuse

VARIANT_FILES = {Precision.FP32: "model.onnx", Precision.INT8: "model.int8.onnx", Precision.FP16: "model.fp16.onnx"}
# bf16 is the fp32 graph computed in bf16 by OpenVINO: it shares model.onnx.
VARIANT_FILES[Precision.BF16] = VARIANT_FILES[Precision.FP32]


@dataclass(frozen=True)
class ExportOptions:
    """Everything `bertx export` can be told."""

    model: str
    output: Path | None = None
    optimize: OptimizeLevel = OptimizeLevel.O2
    int8: bool = False
    fp16: bool = False
    bf16: bool = False
    opset: int | None = None
    max_length: int | None = None
    force: bool = False
    validate: bool = True
    thresholds: dict[Precision, Thresholds] = field(default_factory=dict)
    int8_options: Int8Options = field(default_factory=Int8Options)
    allow_download: bool = True
    # A `sentence_embedding` output in each ONNX graph (the model's default pooling); normalized as the
    # model's defaults say unless `sentence_normalize` says otherwise.
    sentence_embedding: bool = False
    sentence_normalize: bool | None = None
    # Prompts added to those the model folder declares (name, text), and the one applied by default
    # ("" for none, None to keep the folder's).
    prompts: tuple[tuple[str, str], ...] = ()
    default_prompt_name: str | None = None


@dataclass(frozen=True)
class _Built:
    """One variant as built: its files (artifact name → built file, the graph first), the engine it
    is made for, and the settings the manifest records."""

    files: dict[str, Path]
    settings: dict[str, Any]
    quantization: dict[str, Any] | None = None
    backend: Backend = Backend.ONNXRUNTIME
    precision: InferencePrecision | None = None

    @property
    def graph_name(self) -> str:
        return next(iter(self.files))


@dataclass(frozen=True)
class ExportResult:
    """Where the artifact was written, its manifest, and how long each step took."""

    path: Path
    manifest: Manifest
    timings: dict[str, float]


class _Steps:
    """Progress for the export steps: a spinner while running, a line with the time when done."""

    def __init__(self, console: Console, quiet_mode: bool) -> None:
        self.console = console
        self.quiet = quiet_mode
        self.timings: dict[str, float] = {}

    def note(self, message: str) -> None:
        """A progress line inside a long step."""
        if not self.quiet:
            self.console.print(f"[dim]  {message}[/]")

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        start = time.perf_counter()
        if self.quiet:
            yield
        else:
            with self.console.status(f"{name} {detail}".strip() + " …"):
                yield
        self.timings[name] = time.perf_counter() - start
        if not self.quiet:
            self.console.print(f"[green]✓[/] {name:<9} {self.timings[name]:6.1f}s  {detail}")


def export_model(options: ExportOptions, console: Console | None = None, quiet_mode: bool = False) -> ExportResult:
    """Export `options.model` into an artifact folder and return where it went.

    Raises:
        ModelNotFoundError: the model is neither a folder, nor cached, nor reachable.
        UnsupportedModelError: its type cannot be exported (the message says why).
        OutputExistsError: the output exists and `force` was not given, or is not a bertx artifact.
        ExportError: a step failed; nothing was written.
        ParityError: a variant missed its parity thresholds against PyTorch; nothing was written.
    """
    console = console or Console(stderr=True)
    steps = _Steps(console, quiet_mode)
    _check_int8_options(options)
    _check_bf16(options)
    if options.sentence_normalize is not None and not options.sentence_embedding:
        raise ExportError("--sentence-normalize / --no-sentence-normalize go with --sentence-embedding")
    with steps.step("resolve", options.model):
        source = resolve_model(options.model, options.allow_download)
    target = (options.output or Path("models") / source.name).absolute()
    remove_stale_partials(target)
    check_target(target, options.force)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_folder(target)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with sigterm_as_interrupt():
            scratch.mkdir()
            manifest = _build(options, source, scratch, steps)
            check_target(target, options.force)  # the export takes minutes: look again before replacing
            move_into_place(scratch / "artifact", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not quiet_mode:
        print_summary(console, target, manifest, steps.timings)
    return ExportResult(target, manifest, steps.timings)


def _build(options: ExportOptions, source: ResolvedModel, scratch: Path, steps: _Steps) -> Manifest:
    artifact, work = scratch / "artifact", scratch / "work"
    artifact.mkdir()
    work.mkdir()
    with steps.step("load", f"({source.found_via}: {source.path})"):
        facts = read_model_facts(source, options.max_length)
        prompts = with_prompts(facts.prompts, options.prompts, options.default_prompt_name)
        if prompts.named and not prompts.include_prompt and facts.defaults.pooling is Pooling.CLS:
            raise UnsupportedModelError(
                "this model pools [CLS] and leaves its prompt's tokens out of pooling, which sentence-transformers "
                "versions compute differently; bertx does not export it yet"
            )
        if options.sentence_embedding and facts.defaults.pooling not in GRAPH_POOLINGS:
            raise ExportError(
                f"--sentence-embedding pools as the model's default ({facts.defaults.pooling.value}), which the graph "
                f"output cannot express; it supports {', '.join(p.value for p in GRAPH_POOLINGS)}"
            )
        tokenizer = write_tokenizer(source.path, artifact / "tokenizer.json")
        weights = source.weights_file
        source_info = Source(source.id, str(source.path), source.found_via, weights.name, sha256_file(weights))
    with steps.step("export", "(Optimum, all hidden states)"):
        exported = export_onnx(source, facts, work / "exported", options.opset)
        inputs, graph_outputs = onnx_io_names(exported)
        expected = output_names(facts)
        if graph_outputs != expected:
            raise ExportError(f"exported graph has outputs {graph_outputs}, expected {expected}")
        outputs = [name for name in graph_outputs if facts.head is None or name != facts.head.output]
    built: dict[Precision, _Built] = {}
    model_type = facts.architecture.model_type
    unfused = supported_type(model_type).unfused
    with steps.step("fuse", f"({options.optimize.value})" if unfused is None else "(skipped: no fusion for this type)"):
        fused, settings = fuse(work / "exported", options.optimize, work / "fused", model_type=model_type)
        built[Precision.FP32] = _Built({VARIANT_FILES[Precision.FP32]: fused}, settings)
    encoder = TextEncoder(artifact / "tokenizer.json", facts.defaults.max_seq_length, tokenizer.pad_token_id)
    thresholds = {**DEFAULT_THRESHOLDS, **options.thresholds}
    proof = build_proof(encoder, proof_texts(), facts.architecture)
    speed_sample: tuple[Batch, ...] = ()
    if options.int8:
        cpu = cpu_info()
        recipe = options.int8_options.recipe
        detail = "search" if recipe == "auto" else recipe
        with steps.step("int8", f"({detail} on this {cpu.cpu_class} CPU, vs PyTorch on the proof text)"):
            context = make_context(
                fused,
                exported,
                work / "int8",
                encoder,
                inputs,
                outputs[-1],
                facts.defaults,
                source.path,
                proof,
                options.int8_options.calibration_file,
                timed=recipe == "auto",
            )
            speed_sample = context.speed
            chosen, quant = quantize_int8(context, cpu, options.int8_options, steps.note)
            built[Precision.INT8] = _int8_built(chosen, settings, quant)
        if not quant["meets_target"] and Precision.INT8 not in options.thresholds:
            # --allow-below-target kept the most accurate candidate, measured on these same texts: the
            # gate checks it against what it measured, not against a limit the search already waived.
            measured = next(c["cosine_min"] for c in quant["candidates"] if c["recipe"] == quant["recipe"])
            limit = min(thresholds[Precision.INT8].min_cosine, float(measured) - 1e-4)
            thresholds[Precision.INT8] = replace(thresholds[Precision.INT8], min_cosine=limit)
            steps.note(f"int8 kept below its target (--allow-below-target): parity gate min cosine {limit:.4f}")
    if options.fp16:
        with steps.step("fp16", "(fp16 weights and compute, fp32 inputs/outputs)"):
            fp16_path, fp16_settings = fuse(
                work / "exported", options.optimize, work / "fp16", fp16=True, model_type=model_type
            )
            built[Precision.FP16] = _Built({VARIANT_FILES[Precision.FP16]: fp16_path}, fp16_settings)
    if options.bf16:
        with steps.step("bf16", "(the fp32 graph, computed in bf16 by OpenVINO on this CPU)"):
            bf16_settings = {**settings, "engine": "OpenVINO", "inference_precision": "bf16", "cpu": cpu_info().model}
            built[Precision.BF16] = _Built(
                {VARIANT_FILES[Precision.BF16]: fused},
                bf16_settings,
                backend=Backend.OPENVINO,
                precision=InferencePrecision.BF16,
            )
    for variant in built.values():
        for name, path in variant.files.items():
            if not (artifact / name).exists():
                shutil.copyfile(path, artifact / name)
    pooled = None
    if options.sentence_embedding:
        normalize = facts.defaults.normalize if options.sentence_normalize is None else options.sentence_normalize
        files = tuple(dict.fromkeys(b.graph_name for b in built.values() if b.graph_name.endswith(".onnx")))
        with steps.step(
            "pooling", f"({facts.defaults.pooling.value}{', normalized' if normalize else ''} in the graph)"
        ):
            for name in files:
                add_sentence_embedding(artifact / name, outputs[-1], facts.defaults.pooling, normalize)
        pooled = SentenceEmbeddingOutput(SENTENCE_EMBEDDING, facts.defaults.pooling, normalize, files)
    graphs = {p: GraphFile(artifact / b.graph_name, b.backend, b.precision) for p, b in built.items()}
    reports: dict[Precision, ParityReport] = {}
    if options.validate:
        with steps.step("validate", f"({', '.join(p.value for p in built)} vs PyTorch fp32)"):
            with quiet():
                reports = check_parity(
                    source.path,
                    inputs,
                    outputs,
                    graphs,
                    facts.defaults,
                    thresholds,
                    proof,
                    head=facts.head,
                    pooled=pooled,
                )
        failed = [p.value for p, r in reports.items() if not r.passed]
        if failed:
            steps.console.print(parity_table({p.value: r for p, r in reports.items()}))
            raise ParityError(
                f"{', '.join(failed)} did not meet the parity thresholds against PyTorch (table above); "
                "nothing was written. Use another --optimize level (O3's GELU approximation moves fp32 values), "
                "relax a threshold with --min-cosine VARIANT=X / --max-abs X, or skip the gate with --no-validate"
            )
    recommended = None
    if reports:
        cpu = cpu_info()
        target = options.int8_options.target_cosine
        timed = ", ".join(p.value for p in cpu_variants(graphs))
        with steps.step("recommend", f"({timed} timed side by side on this {cpu.cpu_class} CPU)"):
            recommended = recommend(graphs, reports, encoder, inputs, outputs[-1], cpu, target, speed_sample)
        steps.note(recommended.reason)
        int8 = built.get(Precision.INT8)
        if int8 is not None and int8.quantization is not None:
            quantization = timed_by_recommendation(int8.quantization, recommended.texts_per_s, RECOMMEND_ROUNDS)
            built[Precision.INT8] = replace(int8, quantization=quantization)
    variants = {
        precision: Variant(
            precision=precision,
            file=b.graph_name,
            sha256=sha256_file(artifact / b.graph_name),
            size_bytes=(artifact / b.graph_name).stat().st_size,
            optimization=b.settings,
            quantization=b.quantization,
            validated=precision in reports,
            parity=reports.get(precision),
            backend=b.backend.value,
            inference_precision=None if b.precision is None else b.precision.value,
            extra_files={
                name: {"sha256": sha256_file(artifact / name), "size_bytes": (artifact / name).stat().st_size}
                for name in list(b.files)[1:]
            },
        )
        for precision, b in built.items()
    }
    manifest = Manifest(
        bertx_version=bertx.__version__,
        source=source_info,
        architecture=facts.architecture,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        tokenizer=tokenizer,
        defaults=facts.defaults,
        variants=variants,
        export=export_facts(exported, options.optimize.value, options.validate),
        head=facts.head,
        sentence_embedding=pooled,
        prompts=prompts,
        recommended=recommended,
    )
    manifest.save(artifact)
    return manifest


def _int8_built(chosen: GraphFile, settings: dict[str, Any], quant: dict[str, Any]) -> _Built:
    """The INT8 variant's files: one ONNX for onnxruntime, or an OpenVINO IR (graph and weights)."""
    if chosen.backend is Backend.OPENVINO:
        files = {"model.int8.xml": chosen.path, "model.int8.bin": chosen.path.with_suffix(".bin")}
    else:
        files = {VARIANT_FILES[Precision.INT8]: chosen.path}
    return _Built(files, settings, quant, chosen.backend, chosen.precision)


def _check_bf16(options: ExportOptions) -> None:
    """bf16 is offered only where the CPU computes it and OpenVINO is there to use it."""
    if not options.bf16:
        return
    cpu = cpu_info()
    if not cpu.bf16:
        raise ExportError(
            f"--bf16 needs a CPU with bf16 instructions (AVX-512 BF16 or AMX); this one ({cpu.model}) has none, "
            "and emulated bf16 is slower than fp32. Export without --bf16 here (`bertx doctor` shows the CPU)"
        )
    from bertx.openvino_backend import import_openvino

    import_openvino()


def _check_int8_options(options: ExportOptions) -> None:
    """Reject bad INT8 options before minutes of export work, not after."""
    if not options.int8:
        return
    int8 = options.int8_options
    if not 0.0 < int8.target_cosine <= 1.0:
        raise ExportError(f"--int8-target-cosine must be in (0, 1], got {int8.target_cosine}")
    fixed = openvino_named(int8.recipe)
    if fixed is not None and (reason := openvino_refused(fixed, cpu_info())) is not None:
        raise ExportError(f"--int8 {int8.recipe} is {reason}; use openvino-static, openvino-smooth or auto")
    if int8.recipe != "auto" and fixed is None:
        named_recipe(int8.recipe, cpu_info())
    calibration_texts(int8.calibration_file)
