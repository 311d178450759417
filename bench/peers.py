"""The fastest tools people would use instead of bertx on a CPU, set up as their users set them up.

- st-onnx-qint8: sentence-transformers' ONNX backend with `export_dynamic_quantized_onnx_model` and the
  preset for this CPU (avx512_vnni, avx512, avx2 or arm64).
- st-openvino: sentence-transformers' OpenVINO backend, OpenVINO's own precision choice (bf16 on CPUs
  that have it; the precision that ran is reported).
- openvino-int8-nncf: that OpenVINO model quantized by `nncf.quantize(..., model_type=TRANSFORMER)`,
  calibrated on the same text bertx calibrates on.
- fastembed: given a plain `last_hidden_state` ONNX export of the same model (fastembed reads one output).

Everything a peer builds goes to `models/.bench-peers/<artifact>/` and is reused; the model's own
folder (often inside site-packages) is never written to.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertx.cpu import cpu_info
from bertx.manifest import Manifest, Pooling

from .engine_types import FASTEMBED, OPENVINO_NNCF, ST_OPENVINO, ST_QINT8, Engine, Skipped, onnx_size

PEERS_DIR = Path("models") / ".bench-peers"
_NNCF_FILE = "openvino/openvino_model_int8_nncf.xml"


def load_peer(name: str, artifact: Path, source: Path, manifest: Manifest, threads: int) -> Engine | Skipped:
    """Build (once) and load one peer."""
    work = PEERS_DIR / artifact.name
    if manifest.defaults.pooling not in (Pooling.MEAN, Pooling.CLS):
        return Skipped(name, f"peers take mean or cls pooling, the artifact's default is {manifest.defaults.pooling}")
    if name == ST_QINT8:
        return _st_qint8(_copy(source, work / "st-model"), manifest, threads)
    if name == ST_OPENVINO:
        return _st_openvino(_copy(source, work / "st-model"), manifest, threads)
    if name == OPENVINO_NNCF:
        return _openvino_nncf(_copy(source, work / "st-nncf"), manifest, threads)
    if name == FASTEMBED:
        return _fastembed(source, work / "fastembed", artifact.name, manifest, threads)
    return Skipped(name, "unknown peer")


def _copy(source: Path, folder: Path) -> Path:
    """A writable copy of the model folder (peers write their exports beside the weights)."""
    if not (folder / "config.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("onnx", "openvino", "*.onnx"))
    return folder


def _sentence_transformer(folder: Path, manifest: Manifest, threads: int, **kwargs: Any) -> tuple[Any, bool]:
    import torch
    from sentence_transformers import SentenceTransformer

    from bertx.exporter.onnx_export import quiet

    torch.set_num_threads(threads)
    plain = not (folder / "modules.json").is_file()
    if plain and manifest.defaults.pooling is not Pooling.MEAN:
        raise ValueError("a plain transformers folder gets mean pooling in sentence-transformers")
    with quiet():
        model = SentenceTransformer(str(folder), device="cpu", **kwargs)
    model.max_seq_length = manifest.defaults.max_seq_length
    return model, manifest.defaults.normalize and plain


def _encoder(model: Any, normalize: bool) -> Any:
    def encode(texts: Sequence[str], batch: int) -> np.ndarray:
        vectors = model.encode(list(texts), batch_size=batch, convert_to_numpy=True, normalize_embeddings=normalize)
        return np.asarray(vectors, dtype=np.float32)

    return encode


def _ort_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def _st_qint8(folder: Path, manifest: Manifest, threads: int) -> Engine:
    from sentence_transformers import export_dynamic_quantized_onnx_model

    from bertx.exporter.onnx_export import quiet

    preset = cpu_info().int8_preset
    file_name = f"onnx/model_qint8_{preset}.onnx"
    if not (folder / file_name).is_file():
        exported, _ = _sentence_transformer(folder, manifest, threads, backend="onnx")
        with quiet():
            export_dynamic_quantized_onnx_model(exported, preset, str(folder))
    kwargs = {"file_name": file_name, "provider": "CPUExecutionProvider", "session_options": _ort_options(threads)}
    model, normalize = _sentence_transformer(folder, manifest, threads, backend="onnx", model_kwargs=kwargs)
    size = (folder / file_name).stat().st_size
    return Engine(ST_QINT8, _encoder(model, normalize), size, {"preset": preset})


def _ov_config(threads: int) -> dict[str, Any]:
    return {"INFERENCE_NUM_THREADS": threads}


def _precision(model: Any) -> str:
    """The precision OpenVINO chose for the compiled model (bf16 on CPUs that have it)."""
    compiled = getattr(model[0].auto_model, "request", None)
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # type: ignore[union-attr]
    except Exception:  # older optimum-intel keeps an infer request here, or nothing before the first call
        return "unknown"
    return str(getattr(hint, "get_type_name", lambda: hint)())


def _st_openvino(folder: Path, manifest: Manifest, threads: int) -> Engine:
    model, normalize = _sentence_transformer(
        folder, manifest, threads, backend="openvino", model_kwargs={"ov_config": _ov_config(threads)}
    )
    encode = _encoder(model, normalize)
    encode(["warm-up"], 1)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))  # the IR is built in memory from these
    return Engine(ST_OPENVINO, encode, size, {"precision": _precision(model)})


def _openvino_nncf(folder: Path, manifest: Manifest, threads: int) -> Engine:
    if not (folder / _NNCF_FILE).is_file():
        _quantize_with_nncf(folder, manifest, threads)
    kwargs = {"file_name": _NNCF_FILE, "ov_config": _ov_config(threads)}
    model, normalize = _sentence_transformer(folder, manifest, threads, backend="openvino", model_kwargs=kwargs)
    encode = _encoder(model, normalize)
    encode(["warm-up"], 1)
    size = (folder / _NNCF_FILE).with_suffix(".bin").stat().st_size
    return Engine(OPENVINO_NNCF, encode, size, {"precision": _precision(model)})


def _quantize_with_nncf(folder: Path, manifest: Manifest, threads: int) -> None:
    """NNCF static INT8 of the sentence-transformers OpenVINO model, as OpenVINO's guides do it."""
    import logging

    import nncf
    import openvino as ov

    from bertx.exporter.int8 import calibration_texts
    from bertx.exporter.onnx_export import quiet

    model, _ = _sentence_transformer(
        folder, manifest, threads, backend="openvino", model_kwargs={"ov_config": _ov_config(threads)}
    )
    model.save(str(folder))
    ov_model = ov.Core().read_model(str(folder / "openvino" / "openvino_model.xml"))
    names = {port.get_any_name() for port in ov_model.inputs}
    texts = calibration_texts()
    batches = []
    for start in range(0, len(texts), 16):
        features = getattr(model, "preprocess", model.tokenize)(texts[start : start + 16])
        batches.append({k: v.numpy() for k, v in features.items() if k in names})
    nncf.set_log_level(logging.ERROR)
    with quiet(), contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(
            ov_model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches)
        )
    ov.save_model(quantized, str(folder / _NNCF_FILE))


def _fastembed(source: Path, folder: Path, name: str, manifest: Manifest, threads: int) -> Engine:
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    if not (folder / "model.onnx").is_file():
        _plain_export(source, folder)
    limit_length(folder, manifest.defaults.max_seq_length)
    model_id = f"bertx-bench/{name}"
    pooling = PoolingType.CLS if manifest.defaults.pooling is Pooling.CLS else PoolingType.MEAN
    if model_id not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(
            model_id,
            pooling=pooling,
            normalization=manifest.defaults.normalize,
            sources=ModelSource(hf=model_id),
            dim=manifest.architecture.hidden_size,
            model_file="model.onnx",
        )
    model = TextEmbedding(model_id, specific_model_path=str(folder), threads=threads)

    def encode(texts: Sequence[str], batch: int) -> np.ndarray:
        return np.stack(list(model.embed(list(texts), batch_size=batch))).astype(np.float32)

    return Engine(FASTEMBED, encode, onnx_size(folder))


def limit_length(folder: Path, max_length: int) -> None:
    """Make fastembed truncate where every other engine does. It takes the smaller of the tokenizer
    config's `model_max_length` and `max_length`, and the latter is often a leftover training setting
    (128 for all-MiniLM-L6-v2, whose sentence-transformers limit is 256)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    config.pop("max_length", None)
    config["model_max_length"] = max_length
    path.write_text(json.dumps(config), encoding="utf-8")


def _plain_export(source: Path, folder: Path) -> None:
    """A single-output (`last_hidden_state`) ONNX of the model with its tokenizer files, as fastembed reads them."""
    from optimum.exporters.onnx import main_export

    from bertx.exporter.onnx_export import quiet

    scratch = folder.with_name(folder.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    with quiet():
        main_export(str(source), output=scratch, task="feature-extraction", library_name="transformers")
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
