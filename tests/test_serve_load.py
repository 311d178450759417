"""The load bench of `bertx serve` (bench/serve_load.py), kept small: a tiny model, two concurrency levels
and a few dozen requests. Every request is counted, and the vectors served under load match `Model.encode`
run in a process of its own; a second test shows a wrong served vector would surface in that comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from bertx.bench.load_results import LoadSettings
from bertx.bench.serve_load import run
from bertx.bench.serve_report import write


def test_load_levels_count_every_request_and_serve_in_process_vectors(tiny_artifact: Path, tmp_path: Path) -> None:
    settings = LoadSettings(
        clients=(1, 4), requests=40, seconds=60, texts=30, infinity=False, soak_seconds=0, mixed_clients=4
    )
    messages: list[str] = []
    results = run(tiny_artifact, settings, progress=messages.append)

    server = results.servers[0]
    assert server.skipped is None and [level.clients for level in server.levels] == [1, 4, 4]
    assert [level.texts_per_request for level in server.levels] == ["1", "1", "1-64"]
    for level in server.levels:
        assert level.errors == 0 and level.requests == 40, level.first_error
        assert level.texts_per_s > 0 and 0 < level.p50_ms <= level.p95_ms <= level.p99_ms
        assert level.cpu_s is not None and level.cpu_s > 0 and level.cpu_s_per_1000_texts is not None
        assert level.rss_mb is not None and level.rss_mb > 50
        # every served vector against Model.encode over all the texts in a process of its own
        assert level.max_abs_diff is not None and level.max_abs_diff <= 1e-5
    assert results.in_process["texts_per_s"] > 0 and results.in_process["batch1_p50_ms"] > 0
    assert server.levels[0].texts == 40 and server.levels[2].texts > 40  # the mixed level sends several a request
    assert set(results.in_process["rounds_cpu_s_per_1000_texts"]) == {"1", "2", "4"}
    assert all(level.mean_round_texts is not None and level.mean_round_texts >= 1 for level in server.levels)
    assert any("clients" in m for m in messages)

    paths = write(results, tmp_path, "serve-tiny", "bertx bench-serve tiny")
    data = json.loads(paths[0].read_text())
    assert [lv["requests"] for lv in data["servers"][0]["levels"]] == [40, 40, 40]
    table = paths[1].read_text()
    assert "| bertx serve | 1 | 1 |" in table and "| bertx serve | 4 | 1-64 |" in table
    assert "p99 at 1 client" in table and "errors over every level: 0" in table


def test_a_served_vector_that_differs_from_in_process_shows_in_the_level() -> None:
    from bertx.bench.load_clients import _level, _Tally

    reference = np.eye(3, 4, dtype=np.float32)
    tally = _Tally(latencies=[0.001, 0.002, 0.003], texts=3, vectors={0: reference[0], 2: reference[2] + 0.25})
    level = _level(2, tally, 1.0, reference, None)
    assert level.max_abs_diff == pytest.approx(0.25)
    assert level.min_cosine is not None and level.min_cosine < 0.99
    assert level.requests == 3 and level.texts_per_s == 3.0
