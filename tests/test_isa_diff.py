"""`python -m bertx.bench.isa_diff`: two oneDNN instruction sets (or precisions) on one OpenVINO graph, the
first MatMul where they part, and a reproducer that stands alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertx.bench.isa_diff import first_disagreement
from bertx.cpu import cpu_info

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b): return a + b",
    "Le chat dort sur le canapé depuis 3 heures.",
    "42 kg, 3.5 m/s and 1e-9 s",
]


def isa_diff(artifact: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS), encoding="utf-8")
    out = tmp_path / "isa-diff"
    command = [sys.executable, "-m", "bertx.bench.isa_diff", str(artifact), "--texts", str(texts), "--out", str(out)]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    return done, report


def test_first_disagreement_is_the_first_node_whose_inputs_still_agree() -> None:
    rng = np.random.default_rng(0)
    x, y, z = (rng.standard_normal(64).astype(np.float32) for _ in range(3))
    a = {"m1|in0": x, "m1|out": y, "m2|in0": y, "m2|out": z, "m3|in0": z, "m3|out": x}
    b = {"m1|in0": x, "m1|out": y, "m2|in0": y, "m2|out": -z, "m3|in0": -z, "m3|out": -x}
    diffs, culprit = first_disagreement(a, b, 0.999)
    assert [d.name for d in diffs] == ["m1", "m2", "m3"]
    assert culprit is not None and culprit.name == "m2" and culprit.cosine == pytest.approx(-1.0)
    assert diffs[2].inputs_cosine == pytest.approx(-1.0)  # m3 disagrees too, but only because m2 did
    nan = {**b, "m1|out": np.full(64, np.nan, dtype=np.float32)}
    assert first_disagreement(a, nan, 0.999)[1].name == "m1"  # type: ignore[union-attr]


@pytest.mark.slow
def test_an_older_instruction_set_agrees_on_fp32(tiny_artifact: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    done, report = isa_diff(tiny_artifact, tmp_path, "--variant", "fp32", "--precision", "f32", "--isa", "AVX2")
    assert done.returncode == 0, done.stderr
    assert report["texts"] == len(TEXTS) and report["disagree"] is False and report["batches"] == 1
    for way in ("alone", "batched"):
        assert report[way]["min_cosine"] >= 0.9999 and report[way]["below"] == 0  # type: ignore[index]
    assert float(report["batch_invariance_a"]) >= 0.9999  # type: ignore[arg-type]
    assert report["sides"] == ["native ISA, f32", "AVX2, f32"]


@pytest.mark.slow
def test_a_disagreement_is_located_and_reproduced_alone(minilm_artifact: Path, tmp_path: Path) -> None:
    """bf16 against f32 on the same CPU stands in for a kernel fault: the tool must find where they part (on
    MiniLM: a tiny model's few small MatMuls compute alike in both)."""
    ov = pytest.importorskip("openvino")
    if not cpu_info().bf16:
        pytest.skip("needs a CPU with bf16 instructions, so that two sides can compute differently here")
    done, report = isa_diff(
        minilm_artifact, tmp_path, "--variant", "fp32", "--precision", "bf16", "--precision-b", "f32",
        "--isa", "native", "--tolerance", "0.99999",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert report["disagree"] is True and report["sides"] == ["native ISA, bf16", "native ISA, f32"]
    assert report[str(report["worst_run"])]["below"] > 0  # type: ignore[index]
    first = str(report["first"])
    graph = ov.Core().read_model(str(minilm_artifact / "model.onnx"))
    matmuls = [op for op in graph.get_ordered_ops() if op.get_type_name() == "MatMul"]
    disagreeing = report["matmuls_disagreeing"]
    assert isinstance(disagreeing, list) and first in disagreeing and len(disagreeing) <= len(matmuls)
    folder = tmp_path / "isa-diff" / "repro"
    node = ov.Core().read_model(str(folder / "node.xml"))
    assert [op.get_type_name() for op in node.get_ordered_ops()].count("MatMul") == 1
    inputs = np.load(folder / "inputs.npz")
    assert [tuple(p.get_partial_shape().to_shape()) for p in node.get_parameters()] == [
        inputs[name].shape for name in inputs.files
    ]
    # The folder stands alone: copied elsewhere, its script still shows the two sides apart.
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    for name in ("node.xml", "node.bin", "inputs.npz", "repro.py"):
        (alone / name).write_bytes((folder / name).read_bytes())
    shown = subprocess.run([sys.executable, "repro.py"], cwd=alone, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    cosine = float(shown.stdout.split("cosine ")[1].split()[0])
    assert 0.99 < cosine < 1.0
