"""The engines `bertx bench` compares: bertx variants and the tools people would use instead.

Every engine embeds the same texts with the same pooling (the artifact's default) and thread budget.
PyTorch eager gets the same length-sorted, padded-to-longest batches as bertx, so the ratio measures
the engine, not the batching. A peer that is not installed, or fails to load, is reported as skipped.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import bertx
from bertx.backends import InferencePrecision
from bertx.manifest import Manifest, Pooling, Precision
from bertx.pooling import l2_normalize, pool

from .engine_types import (
    OPTIMUM,
    PEERS,
    PYTORCH,
    ST_ONNX,
    ST_TORCH,
    Engine,
    Skipped,
    onnx_size,
    weights_size,
)


def engine_names(manifest: Manifest) -> list[str]:
    """All engines for an artifact, PyTorch fp32 (the reference) first."""
    return [PYTORCH, ST_TORCH, ST_ONNX, OPTIMUM, *PEERS] + [f"bertx-{p.value}" for p in manifest.variants]


def load_engine(name: str, artifact: Path, threads: int) -> Engine | Skipped:
    """Load one engine by name, or say why it cannot run here."""
    manifest = Manifest.load(artifact)
    source = Path(manifest.source.path)
    try:
        if name.startswith("bertx-"):
            return _bertx(artifact, Precision(name.removeprefix("bertx-")), threads)
        if not source.is_dir():
            return Skipped(name, f"source weights not found at {source}")
        if name == PYTORCH:
            return _pytorch(source, manifest, threads)
        if name in (ST_TORCH, ST_ONNX):
            return _sentence_transformers(source, manifest, threads, onnx=name == ST_ONNX)
        if name == OPTIMUM:
            return _optimum(source, manifest, threads)
        if name in PEERS:
            from .peers import load_peer

            peer: Engine | Skipped = load_peer(name, artifact, source, manifest, threads)
            return peer
    except ImportError as exc:
        return Skipped(name, f"not installed ({exc.name or exc})")
    except Exception as exc:  # a peer failing to load must not stop the benchmark; report it
        return Skipped(name, f"failed to load: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}")
    return Skipped(name, "unknown engine")


def _pooled(hidden: np.ndarray, mask: np.ndarray, manifest: Manifest) -> np.ndarray:
    vectors = pool(hidden, mask, manifest.defaults.pooling)
    return l2_normalize(vectors) if manifest.defaults.normalize else vectors


def _bertx(artifact: Path, precision: Precision, threads: int) -> Engine:
    model = bertx.Model.from_pretrained(artifact, variant=precision, threads=threads)
    variant = model.variant
    runner = model.runner
    engine = "onnxruntime"
    if variant.backend == "openvino":
        engine = f"OpenVINO {getattr(runner, 'precision', InferencePrecision.F32).value}"
    # Batch-size rows cut batches by count, as every peer does; the default row keeps the token budget.
    by_count = copy.copy(model)
    by_count.batch_tokens = None
    return Engine(
        f"bertx-{precision.value}",
        lambda texts, batch: by_count.encode(list(texts), batch_size=batch),
        variant.size_bytes + sum(int(f["size_bytes"]) for f in variant.extra_files.values()),
        {"engine": engine},
        lambda texts: model.encode(list(texts)),
    )


def _pytorch(source: Path, manifest: Manifest, threads: int) -> Engine:
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    limit = manifest.defaults.max_seq_length

    def encode(texts: Sequence[str], batch: int) -> np.ndarray:
        lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=limit)["input_ids"]]
        order = np.argsort(-np.asarray(lengths), kind="stable")
        out = np.empty((len(texts), manifest.architecture.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch):
                rows = order[start : start + batch]
                inputs = tokenizer(
                    [texts[i] for i in rows], truncation=True, max_length=limit, padding=True, return_tensors="pt"
                )
                hidden = model(**inputs).last_hidden_state.numpy()
                out[rows] = _pooled(hidden, inputs["attention_mask"].numpy(), manifest)
        return out

    return Engine(PYTORCH, encode, weights_size(source))


def _sentence_transformers(source: Path, manifest: Manifest, threads: int, onnx: bool) -> Engine:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    kwargs: dict[str, Any] = {"device": "cpu"}
    if onnx:
        kwargs["backend"] = "onnx"
        kwargs["model_kwargs"] = {"provider": "CPUExecutionProvider"}
    from bertx.exporter.onnx_export import quiet

    with quiet():
        model = SentenceTransformer(str(source), **kwargs)
    model.max_seq_length = manifest.defaults.max_seq_length
    if not (source / "modules.json").is_file() and manifest.defaults.pooling is not Pooling.MEAN:
        raise ValueError("a plain transformers folder gets mean pooling in sentence-transformers")
    normalize = manifest.defaults.normalize and not (source / "modules.json").is_file()

    def encode(texts: Sequence[str], batch: int) -> np.ndarray:
        return np.asarray(
            model.encode(list(texts), batch_size=batch, convert_to_numpy=True, normalize_embeddings=normalize),
            dtype=np.float32,
        )

    size = onnx_size(source) if onnx else weights_size(source)
    return Engine(ST_ONNX if onnx else ST_TORCH, encode, size)


def _optimum(source: Path, manifest: Manifest, threads: int) -> Engine:
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    from bertx.exporter.onnx_export import quiet

    with quiet():
        model = ORTModelForFeatureExtraction.from_pretrained(source, export=True, session_options=options)
    tokenizer = AutoTokenizer.from_pretrained(source)
    limit = manifest.defaults.max_seq_length

    def encode(texts: Sequence[str], batch: int) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), batch):
            inputs = tokenizer(
                list(texts[start : start + batch]), truncation=True, max_length=limit, padding=True, return_tensors="np"
            )
            hidden = model(**inputs).last_hidden_state
            rows.append(_pooled(np.asarray(hidden), inputs["attention_mask"], manifest))
        return np.concatenate(rows) if rows else np.zeros((0, manifest.architecture.hidden_size), np.float32)

    return Engine(OPTIMUM, encode, onnx_size(Path(str(getattr(model, "model_save_dir", source)))))
