"""INT8 search pieces: smoothing keeps the function, recipes convert the nodes they name, options fail fast."""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import bertx
from bertx.cli import optional_int8_value
from bertx.cpu import CpuInfo
from bertx.errors import ExportError, InputFileError
from bertx.tokenization import TextEncoder

from reference import torch_hidden_states

VNNI = CpuInfo("test cpu", "x86_64", avx2=True, avx512=True, vnni=True)
AVX2 = CpuInfo("test cpu", "x86_64", avx2=True, avx512=False, vnni=False)
TEXTS = ["the cat is good", "a quick brown fox jumps over the lazy dog in the park", "the dog"]


def _batches(artifact: Path) -> list[bertx.tokenization.Batch]:
    manifest = bertx.Manifest.load(artifact)
    encoder = TextEncoder(artifact / "tokenizer.json", 128, manifest.tokenizer.pad_token_id)
    return [encoder.pad(encoder.encode([text])) for text in TEXTS]


def test_smoothing_keeps_every_hidden_state(tiny_artifact: Path, tiny_bert: Path) -> None:
    import onnx
    import onnxruntime as ort

    from bertx.exporter.smoothing import smooth

    manifest = bertx.Manifest.load(tiny_artifact)
    batches = _batches(tiny_artifact)
    smoothed, count = smooth(onnx.load(str(tiny_artifact / "model.onnx")), batches, manifest.inputs, 0.5)
    # 2 layers: the Attention input and the FFN input of each come out of a LayerNorm.
    assert count == 4
    assert collections.Counter(n.op_type for n in smoothed.graph.node)["Mul"] >= 4
    session = ort.InferenceSession(smoothed.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch, states in zip(batches, torch_hidden_states(tiny_bert, TEXTS, 128)):
        got = session.run(list(manifest.outputs), batch.feeds(manifest.inputs))
        for ours, theirs in zip(got, states):
            np.testing.assert_allclose(ours[0], theirs, atol=1e-4)


def test_outlier_split_keeps_every_hidden_state_and_its_branch_stays_fp32(
    tiny_artifact: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    from bertx.exporter.int8_recipes import build, mixed_recipe, node_methods
    from bertx.exporter.outliers import feed_forward_blocks, split_outlier_units
    from bertx.exporter.smoothing import quantizable_nodes

    manifest = bertx.Manifest.load(tiny_artifact)
    batches = _batches(tiny_artifact)
    original = onnx.load(str(tiny_artifact / "model.onnx"))
    assert len(feed_forward_blocks(original)) == 2
    split, count = split_outlier_units(original, batches, manifest.inputs, 8)
    assert count == 2
    ops = collections.Counter(n.op_type for n in split.graph.node)
    assert ops["MatMul"] == collections.Counter(n.op_type for n in original.graph.node)["MatMul"] + 4
    # The split names no new quantizable node: the branches are fp32 by construction.
    assert [n.name for n in quantizable_nodes(split)] == [n.name for n in quantizable_nodes(original)]
    session = ort.InferenceSession(split.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch, states in zip(batches, torch_hidden_states(tiny_bert, TEXTS, 128)):
        got = session.run(list(manifest.outputs), batch.feeds(manifest.inputs))
        for ours, theirs in zip(got, states):
            np.testing.assert_allclose(ours[0], theirs, atol=1e-4)
    onnx.save(split, str(tmp_path / "split.onnx"))
    methods = node_methods(original, mixed_recipe(VNNI, 0))
    out = build(mixed_recipe(VNNI, 0), tmp_path / "split.onnx", methods, tmp_path / "q.onnx", batches, manifest.inputs)
    quantized = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert quantized["MatMul"] == 4 and quantized["QAttention"] == 2


def test_mixed_recipe_converts_only_the_nodes_it_names(tiny_artifact: Path, tmp_path: Path) -> None:
    import onnx

    from bertx.exporter.int8_recipes import NodeMethod, build, mixed_recipe, node_methods
    from bertx.exporter.smoothing import quantizable_nodes

    model = onnx.load(str(tiny_artifact / "model.onnx"))
    names = [node.name for node in quantizable_nodes(model)]
    matmuls = [node.name for node in quantizable_nodes(model) if node.op_type == "MatMul"]
    attention = next(node.name for node in quantizable_nodes(model) if node.op_type == "Attention")
    methods = node_methods(model, mixed_recipe(VNNI, 2), [matmuls[0], attention, *matmuls[1:]])
    assert methods[matmuls[0]] is NodeMethod.BLOCKWISE and methods[attention] is NodeMethod.FP32
    assert sum(m is NodeMethod.DYNAMIC for m in methods.values()) == len(names) - 2
    out = build(
        mixed_recipe(VNNI, 2),
        tiny_artifact / "model.onnx",
        methods,
        tmp_path / "mixed.onnx",
        _batches(tiny_artifact),
        bertx.Manifest.load(tiny_artifact).inputs,
    )
    ops = collections.Counter(node.op_type for node in onnx.load(str(out)).graph.node)
    assert ops["MatMulNBits"] == 1 and ops["Attention"] == 1 and ops["QAttention"] == 1
    assert ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"] == len(matmuls) - 1


def test_recipes_follow_the_cpu() -> None:
    from bertx.exporter.int8_recipes import named_recipe, recipes_for

    avx2 = {r.name: r for r in recipes_for(AVX2)}
    vnni = {r.name: r for r in recipes_for(VNNI)}
    # Without VNNI, u8 × s8 sums saturate in int16: 7-bit weights are tried there, not where VNNI is.
    assert "dynamic-reduce-range" in avx2 and "dynamic-reduce-range" not in vnni
    assert avx2["smooth-dynamic"].reduce_range and not vnni["smooth-dynamic"].reduce_range
    assert {"static-minmax", "static-percentile", "static-entropy", "blockwise", "dynamic-u8u8"} <= set(vnni)
    assert avx2["split-dynamic"].reduce_range and vnni["split-dynamic"].outlier_units > 0
    mixed = named_recipe("mixed-3", VNNI)
    assert mixed.accurate_nodes == 3 and mixed.outlier_units == vnni["split-dynamic"].outlier_units
    with pytest.raises(ExportError, match=r"unknown --int8 recipe 'int4'.*smooth-dynamic"):
        named_recipe("int4", VNNI)


def test_ladder_finds_the_fewest_passing_nodes_in_few_steps() -> None:
    from types import SimpleNamespace

    from bertx.exporter.int8_search import Search

    for nodes, fewest in ((24, 7), (24, 1), (24, 24), (3, 2), (1, 1)):
        tried: list[int] = []

        def measure(k: int, fewest: int = fewest, tried: list[int] = tried) -> SimpleNamespace:
            tried.append(k)
            return SimpleNamespace(meets_target=k >= fewest, k=k)

        timed: list[int] = []
        fake = SimpleNamespace(
            progress=lambda message: None, _time=lambda candidate, timed=timed: timed.append(candidate.k), timed=True
        )
        Search._ladder(fake, nodes, measure, "test")  # type: ignore[arg-type]
        assert min(k for k in tried if k >= fewest) == fewest
        assert timed == [fewest]  # only the ladder's pick is timed
        assert len(tried) <= 2 + nodes.bit_length()
    never: list[int] = []
    Search._ladder(
        SimpleNamespace(progress=print, _time=print, timed=True),
        24,
        lambda k: never.append(k) or SimpleNamespace(meets_target=False),
        "t",
    )  # type: ignore[arg-type,func-returns-value]
    assert never[-1] == 24 and len(never) <= 6  # measured last: even all accurate misses the target


def test_calibration_file_is_checked(tmp_path: Path) -> None:
    from bertx.exporter.int8 import calibration_texts

    assert len(calibration_texts()) >= 32
    few = tmp_path / "few.txt"
    few.write_text("one\ntwo\n\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="has 2 non-empty lines"):
        calibration_texts(few)
    with pytest.raises(InputFileError, match="cannot read"):
        calibration_texts(tmp_path / "missing.txt")
    mine = tmp_path / "mine.txt"
    mine.write_text("\n".join(f"text number {i}" for i in range(10)), encoding="utf-8")
    assert calibration_texts(mine)[3] == "text number 3"


def test_int8_alone_means_auto() -> None:
    assert optional_int8_value(["export", "m", "--int8"]) == ["export", "m", "--int8", "auto"]
    assert optional_int8_value(["export", "m", "--int8", "--fp16"]) == ["export", "m", "--int8", "auto", "--fp16"]
    assert optional_int8_value(["export", "m", "--int8", "mixed-4"]) == ["export", "m", "--int8", "mixed-4"]
    assert optional_int8_value(["export", "--int8", str(Path.cwd())])[1:3] == ["--int8", "auto"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "bertx.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_bad_int8_options_fail_before_any_work(tiny_bert: Path, tmp_path: Path) -> None:
    few = tmp_path / "few.txt"
    few.write_text("just one line\n", encoding="utf-8")
    for args, message in (
        (["--int8", "int4"], "unknown --int8 recipe 'int4'"),
        (["--int8", "--calibration-file", str(few)], "give at least 8 texts"),
        (["--int8", "--int8-target-cosine", "1.5"], "--int8-target-cosine must be in (0, 1]"),
    ):
        result = _cli("export", str(tiny_bert), "-o", str(tmp_path / "out"), *args)
        assert result.returncode == 2 and message in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fixed_recipe_with_own_calibration_text(tiny_bert: Path, tmp_path: Path) -> None:
    from bertx.exporter import ExportOptions, Int8Options, export_model

    calibration = tmp_path / "mine.txt"
    calibration.write_text("\n".join(f"the cat and the dog number {i} went to the park" for i in range(16)))
    options = ExportOptions(
        model=str(tiny_bert),
        output=tmp_path / "art",
        int8=True,
        int8_options=Int8Options(recipe="smooth-dynamic", calibration_file=calibration, allow_below_target=True),
    )
    manifest = export_model(options, quiet_mode=True).manifest
    quant = manifest.variants[bertx.Precision.INT8].quantization
    assert quant is not None and quant["recipe"] == "smooth-dynamic" and quant["mode"] == "fixed"
    assert [c["recipe"] for c in quant["candidates"]] == ["smooth-dynamic"]
    # One named recipe is timed once, side by side with fp32, by the recommendation.
    speeds, chosen = manifest.recommended.texts_per_s if manifest.recommended else {}, quant["candidates"][0]
    assert chosen["texts_per_s"] == speeds["int8"] > 0 and quant["fp32_texts_per_s"] == speeds["fp32"] > 0
    assert chosen["speedup"] == round(speeds["int8"] / speeds["fp32"], 3) and chosen["timed_again"]
    assert quant["final_round"] == {
        "fp32_texts_per_s": speeds["fp32"],
        "rounds": 3,
        "candidates": 1,
        "timed_by": "recommendation",
    }
    assert quant["calibration"]["source"] == str(calibration) and quant["calibration"]["texts"] == 16
    assert quant["smoothed_inputs"] == 4
    texts = ["the cat is good", "a quick brown fox"]
    got = bertx.Model.from_pretrained(tmp_path / "art", variant="int8").embed(texts, pooling="cls")
    want = np.stack([states[-1][0] for states in torch_hidden_states(tiny_bert, texts, 128)])
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.95


def test_below_target_kept_recipe_passes_the_gate_it_was_kept_for(
    tiny_bert: Path, export_tiny: Callable[..., Path]
) -> None:
    from bertx.exporter import Int8Options

    options = Int8Options(recipe="dynamic-per-tensor", target_cosine=1.0, allow_below_target=True)
    artifact = export_tiny(tiny_bert, int8=True, int8_options=options)
    variant = bertx.Manifest.load(artifact).variants[bertx.Precision.INT8]
    assert variant.quantization is not None and variant.quantization["meets_target"] is False
    assert variant.parity is not None and variant.parity.passed
    assert variant.parity.thresholds.min_cosine <= min(0.98, variant.parity.cosine_min)


def test_a_named_recipe_without_validation_is_not_timed(tiny_bert: Path, export_tiny: Callable[..., Path]) -> None:
    from bertx.exporter import Int8Options

    options = Int8Options(recipe="dynamic", allow_below_target=True)
    artifact = export_tiny(tiny_bert, int8=True, int8_options=options, validate=False)
    manifest = bertx.Manifest.load(artifact)
    quant = manifest.variants[bertx.Precision.INT8].quantization
    assert manifest.recommended is None and quant is not None and quant["fp32_texts_per_s"] is None
    assert [(c["texts_per_s"], c["speedup"]) for c in quant["candidates"]] == [(0.0, 0.0)]
    result = subprocess.run([sys.executable, "-m", "bertx.cli", "info", str(artifact)], capture_output=True, text=True)
    assert result.returncode == 0 and "not timed" in result.stdout and "INT8 recipe dynamic" in result.stdout
