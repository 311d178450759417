"""OpenVINO as a backend: the same artifact on OpenVINO against PyTorch, the bf16 variant, NNCF INT8
variants, the errors a user meets without the extra or on a CPU without bf16."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import bertx
from bertx.backends import Backend, GraphFile, InferencePrecision, open_graph
from bertx.cpu import CpuInfo, cpu_info
from bertx.errors import ExportError, MissingDependencyError, OptionError
from bertx.session import Device

from reference import MIXED_TEXTS, cosines, torch_hidden_states, torch_sentence_embeddings

pytest.importorskip("openvino")

TEXTS = MIXED_TEXTS
HAS_BF16 = cpu_info().bf16

pytestmark = pytest.mark.slow


def test_fp32_on_openvino_matches_pytorch_hidden_states(minilm_artifact: Path, minilm_source: Path) -> None:
    model = bertx.Model.from_pretrained(minilm_artifact, device="openvino", threads=2)
    assert model.device is Device.OPENVINO
    states = model.hidden_states(TEXTS)
    expected = torch_hidden_states(minilm_source, TEXTS, 256)
    for got, theirs in zip(states, expected):
        assert got.shape == (7, len(theirs[0]), 384)
        np.testing.assert_allclose(got, np.stack(theirs), atol=1e-4)
    last4 = model.encode(TEXTS, layers="last4", pooling="cls", normalize_embeddings=False)
    want = np.stack([np.mean([t[i][0] for i in (3, 4, 5, 6)], axis=0) for t in expected])
    np.testing.assert_allclose(last4, want, atol=1e-4)


def test_compiled_models_are_cached(minilm_artifact: Path) -> None:
    bertx.Model.from_pretrained(minilm_artifact, device="openvino")
    blobs = sorted((minilm_artifact / "ov-cache").glob("*/*.blob"))
    assert blobs
    before = {p: p.stat().st_mtime_ns for p in blobs}
    bertx.Model.from_pretrained(minilm_artifact, device="openvino").encode(["again"])
    assert {p: p.stat().st_mtime_ns for p in blobs} == before  # read back, not compiled and written again


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 instructions")
def test_bf16_variant_against_pytorch(minilm_artifact: Path, minilm_source: Path) -> None:
    manifest = bertx.Manifest.load(minilm_artifact)
    variant = manifest.variants[bertx.Precision.BF16]
    assert variant.backend == "openvino" and variant.inference_precision == "bf16"
    assert variant.file == manifest.variants[bertx.Precision.FP32].file  # the fp32 graph, computed in bf16
    assert variant.parity is not None and variant.parity.passed and len(variant.parity.layers) == 7
    assert variant.parity.cosine_min >= 0.999
    model = bertx.Model.from_pretrained(minilm_artifact, variant="bf16")  # its engine by default
    assert model.device is Device.OPENVINO
    expected = torch_sentence_embeddings(minilm_source, TEXTS, 256, "mean", True)
    assert cosines(model.encode(TEXTS), expected).min() >= 0.999
    with pytest.raises(OptionError, match="device='openvino'"):
        bertx.Model.from_pretrained(minilm_artifact, variant="bf16", device="cpu")


def test_bf16_refused_without_the_instructions(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bertx.exporter import ExportOptions, export_model, pipeline

    no_bf16 = CpuInfo("old cpu", "x86_64", avx2=True, avx512=False, vnni=False, bf16=False)
    monkeypatch.setattr(pipeline, "cpu_info", lambda: no_bf16)
    with pytest.raises(ExportError, match="AVX-512 BF16 or AMX"):
        export_model(ExportOptions(model=str(tiny_bert), output=Path("unused"), bf16=True), quiet_mode=True)
    assert not Path("unused").exists()


def test_missing_openvino_names_the_extra(minilm_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    graph = GraphFile(minilm_artifact / "model.onnx", Backend.OPENVINO, InferencePrecision.F32)
    with pytest.raises(MissingDependencyError, match=r"pip install 'bertx\[openvino\]'"):
        open_graph(graph)


def test_unreadable_graph_is_one_sentence(tmp_path: Path) -> None:
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"not a model")
    with pytest.raises(bertx.ArtifactError, match=r"OpenVINO .* cannot load model\.onnx"):
        open_graph(GraphFile(graph, Backend.OPENVINO, InferencePrecision.F32))


@pytest.fixture(scope="module")
def nncf_artifact(tiny_bert: Path, export_tiny: Callable[..., Path]) -> Path:
    from bertx.exporter import Int8Options

    pytest.importorskip("nncf")
    recipe = Int8Options(recipe="openvino-smooth-ffn-accurate", allow_below_target=True)
    return export_tiny(tiny_bert, int8=True, int8_options=recipe)


def test_nncf_variant_runs_on_openvino_close_to_pytorch(nncf_artifact: Path, tiny_bert: Path) -> None:
    manifest = bertx.Manifest.load(nncf_artifact)
    variant = manifest.variants[bertx.Precision.INT8]
    assert variant.backend == "openvino" and variant.file == "model.int8.xml"
    assert set(variant.extra_files) == {"model.int8.bin"}
    assert (nncf_artifact / "model.int8.bin").stat().st_size == variant.extra_files["model.int8.bin"]["size_bytes"]
    # Exactly its files: no compiled-model cache from the export's own OpenVINO runs.
    files = sorted(p.name for p in nncf_artifact.iterdir())
    assert files == sorted(["bertx.json", "model.onnx", "tokenizer.json", "model.int8.xml", "model.int8.bin"])
    quant = variant.quantization or {}
    assert quant["backend"] == "openvino" and quant["tool"] == "nncf (OpenVINO)"
    nodes = quant["nodes"]
    assert int(nodes["int8 MatMuls"]) > 0 and int(nodes["accurate MatMuls"]) >= 2  # both FFN outputs kept
    model = bertx.Model.from_pretrained(nncf_artifact, variant="int8")
    assert model.device is Device.OPENVINO
    texts = TEXTS[:3]
    expected = torch_sentence_embeddings(tiny_bert, texts, 128, "mean", False)
    got = model.encode(texts, pooling="mean", normalize_embeddings=False)
    assert cosines(got, expected).min() >= 0.98
    with pytest.raises(OptionError, match="built for OpenVINO"):
        bertx.Model.from_pretrained(nncf_artifact, variant="int8", device="cpu")


def test_ffn_output_projections_are_found(nncf_artifact: Path, tiny_bert: Path, tmp_path: Path) -> None:
    from bertx.exporter.int8_openvino import ffn_out_matmuls
    from bertx.exporter.onnx_export import export_onnx, read_model_facts
    from bertx.exporter.resolve import resolve_model

    source = resolve_model(str(tiny_bert), allow_download=False)
    exported = export_onnx(source, read_model_facts(source, None), tmp_path / "plain", None)
    names = ffn_out_matmuls(exported)
    assert len(names) == 2 and all("output/dense" in n for n in names)

    # The ladder's units: each layer's attention MatMuls together, every other quantized MatMul alone.
    import openvino as ov

    from bertx.exporter.int8_openvino import _quantized_matmuls, matmul_groups, restore

    model = ov.Core().read_model(str(nncf_artifact / "model.int8.xml"))
    groups = matmul_groups(model)
    attention = [g for g in groups if any("/attention/self/" in n for n in g)]
    assert len(attention) == 2 and all(len(g) >= 3 for g in attention)
    assert not any(n in names for g in groups for n in g)  # the FFN outputs are not quantized in this recipe
    restored = restore(model, attention[0])
    assert _quantized_matmuls(restored) == _quantized_matmuls(model) - len(attention[0])
    assert _quantized_matmuls(model) == sum(len(g) for g in groups)  # the original is left as it was


def test_openvino_mixed_keeps_the_most_sensitive_nodes(
    nncf_artifact: Path, tiny_bert: Path, export_tiny: Callable[..., Path]
) -> None:
    from bertx.exporter import Int8Options

    options = Int8Options(recipe="openvino-mixed-2", allow_below_target=True)
    artifact = export_tiny(tiny_bert, int8=True, int8_options=options)
    quant = bertx.Manifest.load(artifact).variants[bertx.Precision.INT8].quantization or {}
    assert quant["recipe"] == "openvino-mixed-2" and "2 most sensitive nodes" in quant["description"]
    assert len(quant["openvino_sensitivity"]) >= 2
    fixed = bertx.Manifest.load(nncf_artifact).variants[bertx.Precision.INT8].quantization or {}
    # The same recipe without the ladder keeps only the FFN output projections out of INT8.
    assert int(quant["nodes"]["accurate MatMuls"]) >= int(fixed["nodes"]["accurate MatMuls"]) + 2
    model = bertx.Model.from_pretrained(artifact, variant="int8")
    expected = torch_sentence_embeddings(tiny_bert, TEXTS[:3], 128, "mean", False)
    assert cosines(model.encode(TEXTS[:3], pooling="mean", normalize_embeddings=False), expected).min() >= 0.98


def test_corrupt_bin_is_caught_before_loading(nncf_artifact: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(nncf_artifact, broken)
    with open(broken / "model.int8.bin", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(bertx.ArtifactError, match=r"model\.int8\.bin"):
        bertx.Model.from_pretrained(broken, variant="int8")


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 instructions")
@pytest.mark.parametrize("order", [("f32", "bf16"), ("bf16", "f32")])
def test_cache_keeps_precisions_apart_in_both_load_orders(
    minilm_artifact: Path, minilm_source: Path, tmp_path: Path, order: tuple[str, str]
) -> None:
    """An f32 compile's blob was once found by a later bf16 load of the same file, which returned NaN."""
    import shutil

    artifact = tmp_path / "artifact"
    shutil.copytree(minilm_artifact, artifact, ignore=shutil.ignore_patterns("ov-cache"))
    expected = torch_sentence_embeddings(minilm_source, TEXTS, 256, "mean", True)
    loads = {"f32": {"device": "openvino"}, "bf16": {"variant": "bf16"}}
    for _ in range(2):  # the second pass reads every blob back
        for name in order:
            vectors = bertx.Model.from_pretrained(artifact, threads=2, **loads[name]).encode(TEXTS)
            assert np.isfinite(vectors).all()
            assert cosines(vectors, expected).min() >= (0.99999 if name == "f32" else 0.999)
    folders = sorted(p.name for p in (artifact / "ov-cache").iterdir())
    assert len(folders) == 2 and {f.split("-")[1] for f in folders} == {"f32", "bf16"}
    assert all(list((artifact / "ov-cache" / f).glob("*.blob")) for f in folders)


def test_corrupt_cached_blob_is_rebuilt(minilm_artifact: Path, minilm_source: Path, tmp_path: Path) -> None:
    import shutil

    artifact = tmp_path / "artifact"
    shutil.copytree(minilm_artifact, artifact, ignore=shutil.ignore_patterns("ov-cache"))
    bertx.Model.from_pretrained(artifact, device="openvino", threads=2)
    blobs = list((artifact / "ov-cache").glob("*/*.blob"))
    assert blobs
    for blob in blobs:
        blob.write_bytes(b"\xff" * 4096)
    vectors = bertx.Model.from_pretrained(artifact, device="openvino", threads=2).encode(TEXTS)
    expected = torch_sentence_embeddings(minilm_source, TEXTS, 256, "mean", True)
    assert cosines(vectors, expected).min() >= 0.99999


def test_cache_key_follows_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertx.openvino_backend import cache_key

    base = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    keys = {
        cache_key("2026.4.1-1", base),
        cache_key("2026.4.1-1", {**base, "INFERENCE_PRECISION_HINT": "bf16"}),
        cache_key("2026.5.0-1", base),
        cache_key("2026.4.1-1", {**base, "NUM_STREAMS": 2}),
    }
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")  # other kernels: never the same blob
    keys.add(cache_key("2026.4.1-1", base))
    assert len(keys) == 5
    assert cache_key("2026.4.1-1", base) == cache_key("2026.4.1-1", dict(reversed(base.items())))
