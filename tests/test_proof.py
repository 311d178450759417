"""The proof every variant passes: the runtime's batches and each text alone, batch-composition invariance,
non-finite vectors as errors, AMX as a CPU class, and the recommended variant behind `variant="auto"`."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

import bertx
from bertx.backends import open_graph
from bertx.batching import DEFAULT_BATCH_TOKENS
from bertx.cpu import CpuInfo
from bertx.errors import ExportError, NonFiniteError
from bertx.manifest import Precision, Recommendation
from bertx.session import FallbackWarning
from bertx.tokenization import TextEncoder

AMX = CpuInfo("Intel Xeon", "x86_64", avx2=True, avx512=True, vnni=True, bf16=True, amx=True)
EPYC = CpuInfo("AMD EPYC", "x86_64", avx2=True, avx512=True, vnni=True, bf16=True)


class _BatchDependent:
    """A runner whose vectors depend on their batch-mates: each batch's outputs scaled per dimension by
    the batch's own largest activation, as a faulty kernel choice or a shared scale would."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.device = bertx.Device.CPU

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.inner.input_names  # type: ignore[attr-defined,no-any-return]

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        got: list[np.ndarray] = self.inner.run(outputs, feeds)  # type: ignore[attr-defined]
        if len(feeds["input_ids"]) == 1:
            return got
        skew = 1.0 + np.abs(got[-1]).max(axis=(0, 1)) / np.abs(got[-1]).max()
        return [*got[:-1], got[-1] * skew]


def _proof(artifact: Path, texts: list[str]) -> tuple[object, object, np.ndarray]:
    from bertx.exporter.proof import build_proof, in_text_order, pooled

    manifest = bertx.Manifest.load(artifact)
    encoder = TextEncoder(artifact / "tokenizer.json", 128, manifest.tokenizer.pad_token_id)
    proof = build_proof(encoder, texts, manifest.architecture)
    runner = open_graph(artifact / "model.onnx")
    reference = in_text_order(
        proof, pooled(runner, proof.batches, manifest.inputs, manifest.last_output, manifest.defaults.pooling)
    )
    return proof, runner, reference


def test_proof_batches_as_the_runtime_does_and_catches_batch_dependence(tiny_artifact: Path) -> None:
    from bertx.exporter.proof import measure, proof_texts

    texts = proof_texts()
    assert len(texts) >= 300 and any(len(t) > 1200 for t in texts) and any(len(t) <= 2 for t in texts)
    manifest = bertx.Manifest.load(tiny_artifact)
    proof, runner, reference = _proof(tiny_artifact, texts)
    # The runtime's batches: longest first, a 2,048-token budget, each text once.
    rows = np.concatenate(proof.rows)  # type: ignore[attr-defined]
    assert sorted(rows.tolist()) == list(range(len(texts)))
    widths = [b.input_ids.shape[1] for b in proof.batches]  # type: ignore[attr-defined]
    assert widths == sorted(widths, reverse=True) and widths[0] == 128
    assert all(b.input_ids.size <= DEFAULT_BATCH_TOKENS or len(b.input_ids) == 1 for b in proof.batches)  # type: ignore[attr-defined]
    args = (manifest.inputs, manifest.last_output, manifest.defaults.pooling)
    honest = measure(runner, proof, reference, *args)  # type: ignore[arg-type]
    assert honest.meets(0.99999) and honest.invariance_min > 0.99999
    skewed = measure(_BatchDependent(runner), proof, reference, *args)  # type: ignore[arg-type]
    assert skewed.single.min() > 0.99999  # right alone …
    assert skewed.batched.min() < 0.999 and skewed.invariance_min < 0.999  # … wrong in a batch
    assert not skewed.meets(0.999)
    # A search candidate that misses in batches is not also run alone: it cannot pass either way.
    calls: list[int] = []

    class Counting(_BatchDependent):
        def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            calls.append(len(feeds["input_ids"]))
            return super().run(outputs, feeds)

    stopped = measure(Counting(runner), proof, reference, *args, stop_below=0.999)  # type: ignore[arg-type]
    assert not stopped.alone_measured and not stopped.meets(0.999) and not stopped.meets(0.5)
    assert len(calls) == len(proof.batches)  # type: ignore[attr-defined]
    assert stopped.cosine_min == pytest.approx(float(skewed.batched.min()))
    kept = measure(runner, proof, reference, *args, stop_below=0.999)  # type: ignore[arg-type]
    assert kept.alone_measured and kept.meets(0.99999)  # one that passes in batches is run alone too


def test_parity_report_holds_the_proof(tiny_artifact: Path) -> None:
    for precision, variant in bertx.Manifest.load(tiny_artifact).variants.items():
        report = variant.parity
        assert report is not None and report.texts >= 300, precision
        assert report.cosine_min_single is not None and report.batch_invariance_min is not None
        assert report.batches is not None and "alone" in report.batches


def test_a_non_finite_vector_is_an_error_naming_variant_and_device(tiny_artifact: Path) -> None:
    model = bertx.Model.from_pretrained(tiny_artifact, variant="int8")
    real = model.runner

    class Poisoned:
        device = real.device
        input_names = real.input_names

        def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            got = real.run(outputs, feeds)
            got[-1][0, 0, 0] = np.nan
            return got

    model.runner = Poisoned()
    with pytest.raises(NonFiniteError, match=r"int8 variant on cpu .*NaN"):
        model.encode(["a text", "another text"])

    class PaddingOnly(Poisoned):
        def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            got = real.run(outputs, feeds)
            padded = feeds["attention_mask"] == 0
            got[-1][padded] = np.inf
            return got

    model.runner = PaddingOnly()
    vectors = model.encode(["a", "a much longer text than the first one"])
    assert np.isfinite(vectors).all()


def test_amx_is_a_cpu_class_of_its_own() -> None:
    from bertx.exporter import int8_openvino

    assert AMX.cpu_class == "amx" and AMX.int8_preset == "avx512_vnni" and "amx" in AMX.flags_key
    assert EPYC.cpu_class == "avx512_vnni" and "amx" not in EPYC.flags_key
    names = [r.name for r in int8_openvino.RECIPES if int8_openvino.refused(r, AMX) is None]
    assert names == ["openvino-static", "openvino-smooth"]  # only all-INT8 graphs on AMX
    assert all(int8_openvino.refused(r, EPYC) is None for r in int8_openvino.RECIPES)
    assert "AMX" in (int8_openvino.refused(int8_openvino.mixed(4), AMX) or "")


def test_refused_recipe_is_an_error_before_any_work(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("nncf")
    from bertx.exporter import ExportOptions, Int8Options, export_model, pipeline

    monkeypatch.setattr(pipeline, "cpu_info", lambda: AMX)
    options = ExportOptions(
        model=str(tiny_bert), output=tmp_path / "out", int8=True, int8_options=Int8Options(recipe="openvino-mixed-2")
    )
    with pytest.raises(ExportError, match="refused on AMX"):
        export_model(options, quiet_mode=True)
    assert not (tmp_path / "out").exists()


def test_export_recommends_a_variant_and_auto_loads_it(tiny_artifact: Path) -> None:
    manifest = bertx.Manifest.load(tiny_artifact)
    rec = manifest.recommended
    assert rec is not None and rec.variant in manifest.variants and Precision.FP32 in rec.ranking
    assert set(rec.texts_per_s) == {"fp32", "int8"} and rec.cpu_class and rec.reason
    assert rec.texts_per_s[rec.variant.value] == max(rec.texts_per_s[p.value] for p in rec.ranking)
    model = bertx.Model.from_pretrained(tiny_artifact, variant="auto")
    assert model.variant.precision is rec.variant


def test_auto_falls_back_where_the_cpu_cannot_run_the_recommendation(
    tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bertx.cpu
    from bertx.loading import auto_variant

    manifest = bertx.Manifest.load(tiny_artifact)
    fp32 = manifest.variants[Precision.FP32]
    bf16 = dataclasses.replace(fp32, precision=Precision.BF16, backend="openvino", inference_precision="bf16")
    rec = Recommendation(
        Precision.BF16,
        0.995,
        "Intel Xeon",
        "amx",
        {"bf16": 9.0, "int8": 5.0, "fp32": 2.0},
        (Precision.BF16, Precision.INT8, Precision.FP32),
        "bf16 is fastest",
    )
    with_bf16 = dataclasses.replace(manifest, variants={**manifest.variants, Precision.BF16: bf16}, recommended=rec)
    monkeypatch.setattr(bertx.cpu, "cpu_info", lambda: dataclasses.replace(EPYC, bf16=False))
    with pytest.warns(FallbackWarning, match=r"bf16 variant needs bf16 instructions.*loading the int8 variant"):
        assert auto_variant(with_bf16, None) is Precision.INT8
    monkeypatch.setattr(bertx.cpu, "cpu_info", lambda: AMX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if __import__("importlib.util").util.find_spec("openvino") is not None:
            assert auto_variant(with_bf16, None) is Precision.BF16
    assert auto_variant(dataclasses.replace(manifest, recommended=None), None) is Precision.FP32
    assert auto_variant(with_bf16, "cuda") is Precision.FP32
