"""Execution providers: auto, TensorRT options built from the artifact, doctor, and the CUDA path
(which runs only where onnxruntime-gpu and a GPU are present)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import bertx
from bertx.errors import OptionError, ProviderError
from bertx.session import Device, TensorRTSettings

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_auto_picks_what_is_available_and_logs_it(tiny_artifact: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bertx"):
        model = bertx.Model.from_pretrained(tiny_artifact, device="auto")
    assert model.device is (Device.CUDA if HAS_CUDA else Device.CPU)
    assert "device auto →" in caplog.text
    np.testing.assert_allclose(
        model.embed(["the cat"]), bertx.Model.from_pretrained(tiny_artifact).embed(["the cat"]), atol=1e-4
    )


def test_unknown_device_lists_the_valid_ones(tiny_artifact: Path) -> None:
    with pytest.raises(OptionError, match="expected one of cpu, cuda, tensorrt, openvino, auto"):
        bertx.Model.from_pretrained(tiny_artifact, device="tpu")


@pytest.mark.skipif("TensorrtExecutionProvider" in ort.get_available_providers(), reason="TensorRT is present")
def test_tensorrt_where_unavailable(tiny_artifact: Path) -> None:
    with pytest.raises(ProviderError, match="TensorrtExecutionProvider is not available"):
        bertx.Model.from_pretrained(tiny_artifact, device="tensorrt")


def test_tensorrt_options_from_the_artifact(tmp_path: Path) -> None:
    settings = TensorRTSettings(
        cache_dir=tmp_path / "trt-cache" / "fp16",
        input_names=("input_ids", "attention_mask", "token_type_ids"),
        max_batch=64,
        max_length=256,
        opt_length=128,
        fp16=True,
    )
    options = settings.provider_options()
    assert options["trt_fp16_enable"] == "True" and options["trt_int8_enable"] == "False"
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(tmp_path / "trt-cache" / "fp16")
    assert options["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1,token_type_ids:1x1"
    assert options["trt_profile_opt_shapes"] == "input_ids:64x128,attention_mask:64x128,token_type_ids:64x128"
    assert options["trt_profile_max_shapes"] == "input_ids:64x256,attention_mask:64x256,token_type_ids:64x256"
    assert all(isinstance(v, str) for v in options.values())
    with pytest.raises(OptionError, match="opt_length"):
        TensorRTSettings(tmp_path, ("input_ids",), max_batch=1, max_length=64, opt_length=128).provider_options()


def test_doctor_reports_providers_cpu_and_conflicts(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertx import doctor

    report = doctor.diagnose()
    assert any(c.name == "CPUExecutionProvider" and c.works for c in report.providers)
    assert report.versions["onnxruntime"] == ort.__version__ or report.versions["onnxruntime-gpu"]
    assert report.cpu.int8_preset in ("avx2", "avx512", "avx512_vnni", "arm64")
    versions = {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"}
    monkeypatch.setattr(doctor, "_version", lambda name: versions.get(name, "1.0"))
    assert any("both installed" in p for p in doctor.diagnose().problems)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert any(n.startswith("ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI: OpenVINO") for n in doctor.diagnose().notes)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    result = subprocess.run([sys.executable, "-m", "bertx.cli", "doctor"], capture_output=True, text=True)
    assert result.returncode == 0 and "CPUExecutionProvider: ok" in result.stdout and "int8 preset" in result.stdout


def test_info_shows_the_int8_search(tiny_artifact: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bertx.cli", "info", str(tiny_artifact)], capture_output=True, text=True
    )
    assert result.returncode == 0 and "INT8 search: min cosine ≥ 0.995" in result.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu with a working CUDA provider")
def test_cuda_with_io_binding_matches_the_cpu(minilm_artifact: Path) -> None:
    texts = ["A man is eating food.", "Der Himmel ist blau.", "🙂"]
    cpu = bertx.Model.from_pretrained(minilm_artifact)
    gpu = bertx.Model.from_pretrained(minilm_artifact, device="cuda")
    assert gpu.device is Device.CUDA
    assert gpu.runner.session.get_providers()[0] == "CUDAExecutionProvider"  # type: ignore[attr-defined]
    np.testing.assert_allclose(gpu.encode(texts, layers="last4"), cpu.encode(texts, layers="last4"), atol=1e-4)
    fp16 = bertx.Model.from_pretrained(minilm_artifact, variant="fp16", device="cuda").encode(texts)
    assert ((fp16 * cpu.encode(texts)).sum(1) >= 0.999).all()
