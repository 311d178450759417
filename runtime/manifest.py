"""The artifact manifest (`bertx.json`): everything the runtime needs to serve an exported model.

The manifest is the contract between the exporter and the runtime. The runtime never reads
transformers' config files; what it needs about the architecture, the tokenizer and the default
pooling is written here at export time.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ArtifactError, VariantError
from .parity_report import HeadParity, LayerError, ParityReport, PooledParity, Thresholds
from .pooling import Pooling
from .prompts import Prompts

# Pooling and the parity report live in their own modules; the manifest is where users find them.
__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Architecture",
    "Defaults",
    "Head",
    "HeadKind",
    "HeadParity",
    "LayerError",
    "Manifest",
    "ParityReport",
    "PooledParity",
    "Pooling",
    "Precision",
    "ProblemType",
    "Recommendation",
    "SentenceEmbeddingOutput",
    "Source",
    "Thresholds",
    "TokenizerInfo",
    "Variant",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "bertx.json"


class Precision(str, Enum):
    """The precision variants an artifact can hold; fp32 is always present."""

    FP32 = "fp32"
    INT8 = "int8"
    FP16 = "fp16"
    BF16 = "bf16"


class HeadKind(str, Enum):
    """The task head a fine-tuned checkpoint carries on top of its encoder."""

    SEQUENCE_CLASSIFICATION = "sequence-classification"
    TOKEN_CLASSIFICATION = "token-classification"


class ProblemType(str, Enum):
    """How a head's logits become predictions (transformers' `problem_type`)."""

    SINGLE_LABEL = "single_label_classification"  # softmax, one label per item
    MULTI_LABEL = "multi_label_classification"  # sigmoid per label, any number of labels
    REGRESSION = "regression"  # one raw score per item


@dataclass(frozen=True)
class Head:
    """A fine-tuned task head exported next to the hidden states: its output and what its columns mean.

    Attributes:
        kind: sequence-classification (one row of logits per text or text pair) or token-classification
            (one row per token).
        output: The graph output holding the logits.
        labels: The label of each logit column, in id order (the checkpoint's id2label).
        problem_type: single-label (softmax), multi-label (sigmoid) or regression (raw scores).
    """

    kind: HeadKind
    output: str
    labels: tuple[str, ...]
    problem_type: ProblemType


@dataclass(frozen=True)
class SentenceEmbeddingOutput:
    """A `sentence_embedding` output computed inside the graph, for onnxruntime users without bertx.

    Attributes:
        output: The graph output's name.
        pooling: The pooling it applies to the last hidden state (mask-aware).
        normalize: Whether it is L2-normalized.
        files: The graph files that carry it (an OpenVINO IR variant does not).
    """

    output: str
    pooling: Pooling
    normalize: bool
    files: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """Where the exported weights came from."""

    id: str
    path: str
    found_via: str
    weights_file: str
    sha256: str


@dataclass(frozen=True)
class Architecture:
    """The encoder's shape, as the runtime and `bertx info` need it."""

    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    max_position_embeddings: int
    type_vocab_size: int
    vocab_size: int


@dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer file and the facts needed to pad and to check it matches the model."""

    file: str
    sha256: str
    vocab_size: int
    pad_token: str
    pad_token_id: int


@dataclass(frozen=True)
class Defaults:
    """Default sentence-embedding settings, from a sentence-transformers config when there is one."""

    pooling: Pooling
    normalize: bool
    max_seq_length: int
    origin: str


@dataclass(frozen=True)
class Variant:
    """One ONNX file of the artifact and how it was made."""

    precision: Precision
    file: str
    sha256: str
    size_bytes: int
    optimization: dict[str, Any]
    quantization: dict[str, Any] | None
    validated: bool
    parity: ParityReport | None
    # The engine the file is made for and, for OpenVINO, the precision it computes in. An OpenVINO IR
    # keeps its weights beside the graph: those files are listed with their sha256 and size.
    backend: str = "onnxruntime"
    inference_precision: str | None = None
    extra_files: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Recommendation:
    """The variant to load on the exporting CPU: the fastest that met the target, measured side by side.

    Attributes:
        variant: What `variant="auto"` loads.
        target_cosine: The min cosine against PyTorch (batched and alone) a variant had to reach.
        cpu: The CPU model it was measured on; cpu_class: its class (amx, avx512_vnni, avx512, avx2, arm64).
        texts_per_s: Each timed variant's speed on the proof sample, same run, rounds in turn.
        ranking: The variants that met the target, fastest first: `auto`'s fallbacks on a CPU that
            cannot run the first.
        reason: One sentence for `bertx info`.
    """

    variant: Precision
    target_cosine: float
    cpu: str
    cpu_class: str
    texts_per_s: dict[str, float]
    ranking: tuple[Precision, ...]
    reason: str


@dataclass(frozen=True)
class Manifest:
    """The parsed contents of `bertx.json`."""

    bertx_version: str
    source: Source
    architecture: Architecture
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    tokenizer: TokenizerInfo
    defaults: Defaults
    variants: dict[Precision, Variant]
    export: dict[str, Any] = field(default_factory=dict)
    head: Head | None = None
    sentence_embedding: SentenceEmbeddingOutput | None = None
    prompts: Prompts = field(default_factory=Prompts)
    recommended: Recommendation | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def last_output(self) -> str:
        """The output name of the last encoder layer."""
        return self.outputs[-1]

    def variant(self, precision: Precision | str) -> Variant:
        """Return a variant by name, or raise `VariantError` listing those present."""
        names = ", ".join(p.value for p in self.variants)
        try:
            key = Precision(precision)
        except ValueError:
            raise VariantError(
                f"unknown variant {precision!r}: expected one of {', '.join(p.value for p in Precision)} "
                f"(this artifact has {names})"
            ) from None
        if key not in self.variants:
            raise VariantError(f"this artifact has no {key.value} variant; it has {names}")
        return self.variants[key]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with `schema_version` first."""
        body = asdict(self)
        body.pop("schema_version")
        body["variants"] = {p.value: asdict(v) for p, v in self.variants.items()}
        return {"schema_version": self.schema_version, **_plain(body)}

    def save(self, folder: Path) -> Path:
        """Write `bertx.json` into `folder` and return its path."""
        path = folder / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build a manifest from its JSON form; raise `ArtifactError` on anything malformed."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"manifest schema_version is {version!r}, this bertx reads {SCHEMA_VERSION}; "
                "re-export the model with this version of bertx"
            )
        try:
            defaults = dict(data["defaults"])
            defaults["pooling"] = Pooling(defaults["pooling"])
            variants = {Precision(name): _variant(v) for name, v in data["variants"].items()}
            manifest = cls(
                bertx_version=str(data["bertx_version"]),
                source=Source(**data["source"]),
                architecture=Architecture(**data["architecture"]),
                inputs=tuple(data["inputs"]),
                outputs=tuple(data["outputs"]),
                tokenizer=TokenizerInfo(**data["tokenizer"]),
                defaults=Defaults(**defaults),
                variants=variants,
                export=dict(data.get("export", {})),
                head=_head(data.get("head")),
                sentence_embedding=_sentence_embedding(data.get("sentence_embedding")),
                prompts=Prompts.from_dict(data.get("prompts")),
                recommended=_recommendation(data.get("recommended")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"manifest is malformed ({type(exc).__name__}: {exc})") from exc
        if Precision.FP32 not in manifest.variants:
            raise ArtifactError("manifest lists no fp32 variant; every artifact must have one")
        if len(manifest.outputs) != manifest.architecture.num_layers + 1:
            raise ArtifactError(
                f"manifest lists {len(manifest.outputs)} outputs for {manifest.architecture.num_layers} layers; "
                "expected one per layer plus the embedding output"
            )
        return manifest

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Manifest:
        """Read `bertx.json` from an artifact folder."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise ArtifactError(f"artifact folder {folder} does not exist; export one with `bertx export MODEL`")
        if not path.is_file():
            raise ArtifactError(
                f"{folder} has no {MANIFEST_NAME}: it is not a bertx artifact (export one with `bertx export MODEL`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} does not hold a JSON object")
        return cls.from_dict(data)


def _head(data: dict[str, Any] | None) -> Head | None:
    if data is None:
        return None
    labels = tuple(str(label) for label in data["labels"])
    if not labels:
        raise ValueError("the task head lists no labels")
    return Head(HeadKind(data["kind"]), str(data["output"]), labels, ProblemType(data["problem_type"]))


def _sentence_embedding(data: dict[str, Any] | None) -> SentenceEmbeddingOutput | None:
    if data is None:
        return None
    return SentenceEmbeddingOutput(
        str(data["output"]), Pooling(data["pooling"]), bool(data["normalize"]), tuple(str(f) for f in data["files"])
    )


def _variant(data: dict[str, Any]) -> Variant:
    parity = data.get("parity")
    report = None
    if parity is not None:
        report = ParityReport(
            passed=bool(parity["passed"]),
            thresholds=Thresholds(**parity["thresholds"]),
            texts=int(parity["texts"]),
            tokens=int(parity["tokens"]),
            pooling=Pooling(parity["pooling"]),
            normalize=bool(parity["normalize"]),
            layers=tuple(LayerError(**layer) for layer in parity["layers"]),
            cosine_min=float(parity["cosine_min"]),
            cosine_mean=float(parity["cosine_mean"]),
            nonfinite=bool(parity["nonfinite"]),
            head=None if parity.get("head") is None else HeadParity(**parity["head"]),
            sentence_embedding=None
            if parity.get("sentence_embedding") is None
            else PooledParity(**parity["sentence_embedding"]),
            cosine_min_single=_optional_float(parity.get("cosine_min_single")),
            batch_invariance_min=_optional_float(parity.get("batch_invariance_min")),
            batches=parity.get("batches"),
        )
    return Variant(
        precision=Precision(data["precision"]),
        file=str(data["file"]),
        sha256=str(data["sha256"]),
        size_bytes=int(data["size_bytes"]),
        optimization=dict(data["optimization"]),
        quantization=None if data.get("quantization") is None else dict(data["quantization"]),
        validated=bool(data["validated"]),
        parity=report,
        backend=str(data.get("backend", "onnxruntime")),
        inference_precision=data.get("inference_precision"),
        extra_files={str(k): dict(v) for k, v in data.get("extra_files", {}).items()},
    )


def _recommendation(data: dict[str, Any] | None) -> Recommendation | None:
    if data is None:
        return None
    return Recommendation(
        variant=Precision(data["variant"]),
        target_cosine=float(data["target_cosine"]),
        cpu=str(data["cpu"]),
        cpu_class=str(data["cpu_class"]),
        texts_per_s={str(k): float(v) for k, v in data["texts_per_s"].items()},
        ranking=tuple(Precision(v) for v in data["ranking"]),
        reason=str(data["reason"]),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _plain(value: Any) -> Any:
    """Turn enums and tuples into JSON values, recursively."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {(k.value if isinstance(k, Enum) else k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
