"""The benchmark harness on a tiny model: fields, ratios derived from the measured times, skipped
peers reported, outputs written. No timing thresholds: machines are noisy."""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

from bertx.bench import harness, measuring, report
from bertx.bench.engine_types import PYTORCH, ST_TORCH

from conftest import processes_with

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tiny_artifact: Path) -> harness.Results:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if it were not installed
    settings = measuring.Settings(
        batch_sizes=(1, 4),
        fixed_lengths=(16, 512),
        fixed_count=4,
        corpus_limit=12,
        latency_texts=5,
        repeats=2,
        engines=(PYTORCH, ST_TORCH, "bertx-fp32", "bertx-int8"),
        isolated=False,  # in this process, so that the test can hide sentence-transformers
    )
    try:
        return harness.run(tiny_artifact, settings)
    finally:
        monkeypatch.undo()


def test_rows_ratios_and_accuracy(results: harness.Results) -> None:
    engines = {f.engine for f in results.engines}
    assert engines == {PYTORCH, "bertx-fp32", "bertx-int8"}
    assert [s.name for s in results.skipped] == [ST_TORCH] and "not installed" in results.skipped[0].reason
    workloads = {r.workload for r in results.rows}
    assert workloads == {"corpus", "fixed-16"}  # 512 is over the tiny model's 128 tokens
    by_key = {(r.engine, r.workload, r.batch_size): r for r in results.rows}
    for row in results.rows:
        assert len(row.seconds) == 2 and row.texts > 0 and row.tokens >= row.texts
        assert row.texts_per_s == pytest.approx(row.texts / statistics.median(row.seconds))
        assert row.spread[0] <= row.texts_per_s <= row.spread[1]
        base = by_key[(PYTORCH, row.workload, row.batch_size)]
        assert row.ratio_to_pytorch == pytest.approx(row.texts_per_s / base.texts_per_s)
        assert row.ratio_to_st is None
    assert by_key[("bertx-fp32", "corpus", 1)].texts == 5 and by_key[("bertx-fp32", "corpus", 4)].texts == 12
    # Every engine also ran the corpus with its own default settings (bertx: its token budget).
    assert all(by_key[(engine, "corpus", measuring.DEFAULTS)].texts == 12 for engine in engines)
    assert not any(r.batch_size == measuring.DEFAULTS for r in results.rows if r.workload != "corpus")
    facts = {f.engine: f for f in results.engines}
    assert facts[PYTORCH].cosine_min == pytest.approx(1.0, abs=1e-6)
    assert facts["bertx-fp32"].cosine_min is not None and facts["bertx-fp32"].cosine_min > 0.99999
    assert facts[PYTORCH].recall_at_10 == 1.0
    assert facts["bertx-fp32"].recall_at_10 is not None and facts["bertx-fp32"].recall_at_10 >= 0.9
    assert set(facts["bertx-int8"].latency_ms) == {"p50", "p95", "p99"}
    for fact in facts.values():
        assert fact.cold_start_s is not None and fact.cold_start_s > 0
        assert fact.peak_rss_mb is not None and fact.peak_rss_mb > 10
        assert fact.peak_rss_batch32_mb is not None and fact.peak_rss_batch32_mb > 10
    assert facts["bertx-int8"].peak_rss_mb < facts[PYTORCH].peak_rss_mb  # type: ignore[operator]
    assert results.random_weights is False


def test_outputs_written(results: harness.Results, tmp_path: Path) -> None:
    paths = report.write(results, tmp_path, "tiny", "bertx bench tiny")
    names = sorted(p.name for p in paths)
    assert names[:2] == ["tiny.json", "tiny.md"]
    data = json.loads((tmp_path / "tiny.json").read_text())
    assert data["machine"]["cores"] and data["versions"]["onnxruntime"] and data["settings"]["threads"] == 2
    assert {r["engine"] for r in data["rows"]} == {PYTORCH, "bertx-fp32", "bertx-int8"}
    markdown = (tmp_path / "tiny.md").read_text()
    assert "skipped: not installed" in markdown and "× PyTorch fp32" in markdown


def test_corpus_is_real_and_large_enough() -> None:
    texts = harness.corpus_texts()
    assert len(texts) >= 1000 and len(set(texts)) == len(texts)
    lengths = sorted(len(t.split()) for t in texts)
    assert lengths[len(lengths) // 10] <= 12 and lengths[-len(lengths) // 20] >= 100 and lengths[-1] >= 250


def test_readme_block_is_generated_from_results(results: harness.Results, tmp_path: Path) -> None:
    from bertx.bench import summary

    report.write(results, tmp_path, "tiny", "bertx bench tiny --repeats 2")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{summary.START}\nstale-table\n{summary.END}\n\nafter\n")
    summary.rewrite(readme, [tmp_path / "tiny.json"])
    text = readme.read_text()
    assert "stale-table" not in text and text.endswith("after\n") and "`bertx bench tiny --repeats 2`" in text
    fp32 = next(r for r in results.rows if r.engine == "bertx-fp32" and r.workload == "corpus" and r.batch_size == 4)
    assert f"| bertx-fp32 (onnxruntime) | {fp32.texts_per_s:,.1f} | {fp32.ratio_to_pytorch:.2f}× |" in text
    assert "| sentence-transformers | skipped: not installed" in text


def test_preset_reuses_an_artifact_only_for_the_same_int8_recipe(tiny_artifact: Path) -> None:
    from bertx.bench.presets import _int8_matches
    from bertx.manifest import Manifest, Precision

    quantization = Manifest.load(tiny_artifact).variants[Precision.INT8].quantization
    assert quantization is not None
    assert _int8_matches(tiny_artifact, True, "auto") == (quantization["mode"] == "auto")
    assert _int8_matches(tiny_artifact, True, quantization["recipe"])
    assert not _int8_matches(tiny_artifact, True, "no-such-recipe")
    assert _int8_matches(tiny_artifact, False, "no-such-recipe")


def test_preset_int8_needs_a_preset(tiny_artifact: Path) -> None:
    import subprocess

    env = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "bertx.cli", "bench", str(tiny_artifact), "--preset-int8", "dynamic"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2 and "--preset-int8 applies only with --preset" in result.stderr, result.stderr


def _two_rounds(*engines: str) -> measuring.Settings:
    """Two timed rounds of 8 corpus texts at batch 4, each engine in its own process."""
    return measuring.Settings(
        batch_sizes=(4,),
        fixed_lengths=(),
        corpus_limit=8,
        latency_texts=3,
        repeats=2,
        engines=engines,
        process_checks=False,
    )


def test_engines_measured_in_their_own_processes(tiny_artifact: Path) -> None:
    settings = _two_rounds(PYTORCH, "bertx-fp32", "no-such-engine")
    said: list[str] = []
    results = harness.run(tiny_artifact, settings, said.append)
    assert [s.name for s in results.skipped] == ["no-such-engine"] and "unknown engine" in results.skipped[0].reason
    # Rounds taken in turn, each round starting with a different engine, so drift hits every engine alike.
    rounds = [line for line in said if line.startswith("round ")]
    assert rounds == [
        f"round 1 of 2: {PYTORCH}",
        "round 1 of 2: bertx-fp32",
        "round 2 of 2: bertx-fp32",
        f"round 2 of 2: {PYTORCH}",
    ]
    assert all(len(r.seconds) == 2 for r in results.rows)
    facts = {f.engine: f for f in results.engines}
    assert facts["bertx-fp32"].cosine_min is not None and facts["bertx-fp32"].cosine_min > 0.99999
    assert facts["bertx-fp32"].details == {"engine": "onnxruntime"}
    assert {(r.engine, r.workload, r.batch_size, r.texts) for r in results.rows} == {
        (PYTORCH, "corpus", 4, 8),
        (PYTORCH, "corpus", measuring.DEFAULTS, 8),
        ("bertx-fp32", "corpus", 4, 8),
        ("bertx-fp32", "corpus", measuring.DEFAULTS, 8),
    }


def test_fastembed_truncates_where_the_other_engines_do(tiny_artifact: Path, tmp_path: Path) -> None:
    """A leftover `max_length` in tokenizer_config.json made fastembed cut texts at 128 tokens while every
    other engine cut at 256; fastembed's own loader must now truncate at the artifact's limit."""
    preprocessor = pytest.importorskip("fastembed.common.preprocessor_utils")
    from bertx.bench.peers import limit_length

    folder = tmp_path / "fastembed"
    folder.mkdir()
    for name in ("tokenizer.json", "config.json"):
        source = tiny_artifact / name
        if source.is_file():
            (folder / name).write_bytes(source.read_bytes())
    config = {"max_length": 8, "model_max_length": 512, "pad_token": "[PAD]", "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    limit_length(folder, 24)
    tokenizer, _ = preprocessor.load_tokenizer(folder)
    assert tokenizer.truncation["max_length"] == 24
    assert len(tokenizer.encode(" ".join(["word"] * 100)).ids) == 24


def test_an_engine_that_dies_between_rounds_is_reported_skipped(tiny_artifact: Path) -> None:
    """The worker of one engine is killed before its second round: that engine is reported as skipped,
    the other engine's rounds still complete."""

    def progress(line: str) -> None:
        if line == "round 2 of 2: bertx-fp32":
            for pid in processes_with(b"bertx.bench.worker", b"\0bertx-fp32\0"):
                os.kill(pid, signal.SIGKILL)

    settings = _two_rounds(PYTORCH, "bertx-fp32")
    results = harness.run(tiny_artifact, settings, progress)
    assert [s.name for s in results.skipped] == ["bertx-fp32"]
    assert {r.engine for r in results.rows} == {PYTORCH}
    assert all(len(r.seconds) == 2 for r in results.rows)


def test_neighbour_recall_counts_shared_neighbours() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 16))
    assert harness.neighbour_recall(truth * 3.0, truth, 10) == 1.0  # scale does not move cosine neighbours
    unrelated = rng.normal(size=(40, 16))
    assert harness.neighbour_recall(unrelated, truth, 10) < 0.5
    # Each text's own row never counts as its neighbour: with 11 texts the other 10 are all of them.
    assert harness.neighbour_recall(unrelated[:11], truth[:11], 10) == 1.0
