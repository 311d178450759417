"""`bertx embed --engine ray` on a local two-node Ray cluster made here: vectors equal to single-process
`bertx embed`, a worker killed mid-run, an interrupted job resumed, and refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertx.bench.ray_overhead import corpus_texts

from conftest import processes_with, run_cli

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node and a worker node, one CPU each, as Ray's own test utilities make them."""
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    made.add_node(num_cpus=1)
    made.wait_for_nodes()
    ray.init(address=made.address, log_to_driver=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield str(made.address)
    finally:
        ray.shutdown()
        made.shutdown()


def write_corpus(folder: Path, texts: list[str]) -> Path:
    """Half the texts as JSONL (string ids), half as Parquet in several row groups (integer ids)."""
    folder.mkdir()
    half = len(texts) // 2
    with (folder / "a.jsonl").open("w", encoding="utf-8") as out:
        for i, text in enumerate(texts[:half]):
            out.write(json.dumps({"id": f"a-{i}", "text": text}, ensure_ascii=False) + "\n")
            if i % 97 == 0:
                out.write("\n")  # blank lines are not rows
    ids = list(range(half, len(texts)))
    pq.write_table(pa.table({"id": ids, "text": texts[half:]}), folder / "b.parquet", row_group_size=128)
    return folder


def single_process(artifact: Path, texts: list[str], tmp: Path, *options: str) -> dict[Any, np.ndarray]:
    """Vectors from plain `bertx embed` (one process), keyed by the ids the corpus files give."""
    half = len(texts) // 2
    lines = [{"id": f"a-{i}", "text": t} for i, t in enumerate(texts[:half])]
    lines += [{"id": str(half + i), "text": t} for i, t in enumerate(texts[half:])]
    source = tmp / "single.jsonl"
    source.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    result = run_cli(
        "embed", str(artifact), "-i", str(source), "--id-field", "id", "-o", str(tmp / "single.parquet"), *options
    )
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp / "single.parquet")
    return dict(zip(table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist(), dtype=np.float32)))


def read_parts(out: Path) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    ids: list[str] = []
    vectors = []
    metas = []
    for part in sorted(out.glob("part-*.parquet")):
        table = pq.read_table(part)
        ids += [str(x) for x in table.column("id").to_pylist()]
        vectors.append(np.array(table.column("embedding").to_pylist(), dtype=np.float32))
        metas.append(json.loads(table.schema.metadata[b"bertx"]))
    return ids, np.concatenate(vectors), metas


def check_exact(out: Path, expected: dict[Any, np.ndarray], tolerance: float = 1e-6) -> None:
    ids, vectors, _ = read_parts(out)
    assert len(ids) == len(set(ids)) == len(expected), "a text was lost or written twice"
    want = np.stack([expected[i] for i in ids])
    assert np.abs(vectors - want).max() <= tolerance


def ray_embed(artifact: Path, inputs: Path, out: Path, address: str, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "bertx.cli", "embed", str(artifact), "-i", str(inputs), "-o", str(out),
        "--engine", "ray", "--address", address, "--workers", "2", "--id-field", "id", *options,
    ]  # fmt: skip


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_a_corpus_on_two_nodes_equals_single_process_embed(cluster: str, tiny_artifact: Path, tmp_path: Path) -> None:
    texts = corpus_texts()
    assert len(texts) > 3000
    inputs = write_corpus(tmp_path / "in", texts)
    expected = single_process(tiny_artifact, texts, tmp_path, "--layers", "last4", "--pooling", "max")
    out = tmp_path / "out"
    result = run(
        ray_embed(tiny_artifact, inputs, out, cluster, "--shard-rows", "400", "--layers", "last4", "--pooling", "max")
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"(\d+) shards in .*: \1 embedded now \(\d+ texts", result.stderr), result.stderr
    check_exact(out, expected)
    _, _, metas = read_parts(out)
    assert {m["options"]["layers"] for m in metas} == {"last4"} and metas[0]["variant"] == "fp32"
    assert json.loads((out / "_bertx_done.json").read_text())["rows"] == len(texts)

    again = run(
        ray_embed(tiny_artifact, inputs, out, cluster, "--shard-rows", "400", "--layers", "last4", "--pooling", "max")
    )
    assert again.returncode == 0 and ": 0 embedded now" in again.stderr, again.stderr
    other = run(ray_embed(tiny_artifact, inputs, out, cluster, "--shard-rows", "400"))
    assert other.returncode == 2 and "holds a job with other settings" in other.stderr, other.stderr


def _workers() -> list[int]:
    """Process ids of the cluster's model actors (Ray names their processes after the actor class)."""
    return processes_with(b"ShardEmbedder", b"MapWorker")


def _sigint_ignored() -> bool:
    """Whether this process ignores SIGINT at the OS level (children inherit that, and Python then never
    installs its KeyboardInterrupt handler in them)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return False
    mask = next(line for line in status.read_text().splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def _as_from_a_terminal() -> None:
    """In the job's process before it starts: SIGINT as a shell gives it to a foreground command."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_wait_for_parts(args: list[str], out: Path, parts: int) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    job = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_as_from_a_terminal
    )
    deadline = time.monotonic() + 180
    while len(list(out.glob("part-*.parquet"))) < parts:
        assert job.poll() is None, job.communicate()[1]
        assert time.monotonic() < deadline, "no shard was written in time"
        time.sleep(0.05)
    return job


@pytest.fixture(scope="module")
def minilm_corpus(
    minilm_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[Any, np.ndarray]]:
    """Enough real MiniLM work (several seconds) that a job can be disturbed while it runs."""
    tmp = tmp_path_factory.mktemp("minilm-corpus")
    texts = corpus_texts()[:900]
    return write_corpus(tmp / "in", texts), single_process(minilm_artifact, texts, tmp)


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_no_text_is_lost_or_doubled(
    cluster: str, minilm_artifact: Path, minilm_corpus: tuple[Path, dict[Any, np.ndarray]], tmp_path: Path
) -> None:
    inputs, expected = minilm_corpus
    out = tmp_path / "out"
    job = _start_and_wait_for_parts(ray_embed(minilm_artifact, inputs, out, cluster, "--shard-rows", "30"), out, 1)
    victims = _workers()
    assert victims, "no model actor process found"
    os.kill(victims[0], signal.SIGKILL)
    killed_at = time.time()
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr
    assert any(part.stat().st_mtime > killed_at for part in out.glob("part-*.parquet")), "the job ended before the kill"
    check_exact(out, expected, 1e-5)


@pytest.mark.slow
def test_an_interrupted_job_resumes_with_only_the_missing_shards(
    cluster: str, minilm_artifact: Path, minilm_corpus: tuple[Path, dict[Any, np.ndarray]], tmp_path: Path
) -> None:
    inputs, expected = minilm_corpus
    out = tmp_path / "out"
    # Shards of 5 rows: enough of them (180) that the job is still running when the signal is handled.
    args = ray_embed(minilm_artifact, inputs, out, cluster, "--shard-rows", "5")
    # Interrupted as soon as the first shard is on disk: later, a fast machine can finish the job before
    # the signal lands.
    job = _start_and_wait_for_parts(args, out, 1)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=120)
    ignored = _sigint_ignored()
    assert job.returncode != 0, f"the job ran to its end (SIGINT ignored here: {ignored}): {stderr[-2000:]}"
    total = len(json.loads((out / "_bertx_job.json").read_text())["shards"])
    done_before = len(list(out.glob("part-*.parquet")))
    assert 1 <= done_before < total and not (out / "_bertx_done.json").exists()

    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr
    skipped = int(re.search(r"(\d+) of \d+ shards already done", resumed.stderr).group(1))  # type: ignore[union-attr]
    assert skipped >= done_before
    assert f": {total - skipped} embedded now" in resumed.stderr  # nothing finished is embedded again
    assert not list(out.glob(".part-*.tmp"))
    check_exact(out, expected, 1e-5)


def test_bad_corpora_are_refused_in_one_line(tiny_artifact: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"key": [1, 2], "text": ["a", "b"]}), folder / "x.parquet")
    args = ["embed", str(tiny_artifact), "-i", str(folder), "-o", str(tmp_path / "out"), "--engine", "ray"]
    missing = run_cli(*args, "--id-field", "id")
    assert missing.returncode == 2 and "has no column 'id'" in missing.stderr and "Traceback" not in missing.stderr
    nothing = run_cli(
        "embed", str(tiny_artifact), "-i", str(tmp_path / "none*"), "-o", str(tmp_path / "o"), "--engine", "ray"
    )
    assert nothing.returncode == 2 and "no input files" in nothing.stderr
    words = run_cli(*args, "--words")
    assert words.returncode == 2 and "--engine ray writes sentence vectors" in words.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    full = run_cli(
        "embed",
        str(tiny_artifact),
        "-i",
        str(folder),
        "-o",
        str(tmp_path / "full"),
        "--engine",
        "ray",
        "--id-field",
        "key",
    )
    assert full.returncode == 2 and "not empty and holds no bertx job" in full.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_bad_row_stops_the_job_with_bertx_error_naming_it(cluster: str, tiny_artifact: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"id": i, "text": f"text number {i}"} for i in range(50)]
    rows[37] = {"id": 37, "body": "no text field"}
    (folder / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run(ray_embed(tiny_artifact, folder, tmp_path / "out", cluster, "--shard-rows", "20"))
    assert result.returncode == 2, result.stderr
    assert "line 38" in result.stderr and "needs a string 'text'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_gpu_device_on_a_cluster_without_gpus_is_refused_before_planning(
    cluster: str, tiny_artifact: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.jsonl").write_text(json.dumps({"id": 1, "text": "a text"}) + "\n", encoding="utf-8")
    result = run(ray_embed(tiny_artifact, folder, tmp_path / "out", cluster, "--device", "cuda"))
    assert result.returncode == 2, result.stderr
    assert "asks for 1 GPU per worker and the Ray cluster has 0" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_an_id_column_rows_are_numbered_as_single_process_embed_numbers_them(tmp_path: Path) -> None:
    from bertx.distributed import shards
    from bertx.inputs import read_records

    folder = tmp_path / "in"
    folder.mkdir()
    lines = ["", json.dumps({"text": "one"}), "", "", json.dumps({"text": "two"}), json.dumps({"text": "three"})]
    lines += [json.dumps({"text": f"more {i}"}) for i in range(7)] + [""]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(9)]}), folder / "b.parquet", row_group_size=4)

    def ids_of(files: list[Path]) -> list[str]:
        found: list[str] = []
        for shard in shards.plan(files, 2, "text", None):
            ids, texts = shards.read(shard, "text", None)
            assert len(ids) == len(texts)
            found += ids.to_pylist()
        return found

    alone = [record.id for record in read_records(str(folder / "a.jsonl"))]
    assert alone[:3] == ["2", "5", "6"]
    assert ids_of([folder / "a.jsonl"]) == alone
    both = ids_of(shards.input_files(str(folder)))
    assert both == [f"a.jsonl:{n}" for n in alone] + [f"b.parquet:{n}" for n in range(1, 10)]


@pytest.mark.slow
def test_late_chunks_of_a_corpus_on_two_nodes_equal_encode_chunks(
    cluster: str, tiny_artifact: Path, tmp_path: Path
) -> None:
    import bertx

    folder = tmp_path / "in"
    folder.mkdir()
    docs = [" ".join(f"Sentence {j} of document {i} is about the river bank." for j in range(i % 7)) for i in range(40)]
    (folder / "docs.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": text}) + "\n" for i, text in enumerate(docs)), encoding="utf-8"
    )
    out = tmp_path / "out"
    result = run(ray_embed(tiny_artifact, folder, out, cluster, "--shard-rows", "15", "--chunks"))
    assert result.returncode == 0, result.stderr
    rows = [pq.read_table(part).to_pylist() for part in sorted(out.glob("part-*.parquet"))]
    got = {(r["id"], r["chunk"]): r for part in rows for r in part}
    want = bertx.Model.from_pretrained(tiny_artifact).encode_chunks(docs)
    expected = {(f"d{i}", c): (doc, c) for i, doc in enumerate(want) for c in range(len(doc.chunks))}
    assert set(got) == set(expected)
    for key, (doc, c) in expected.items():
        row = got[key]
        assert row["text"] == doc.chunks[c] and (row["start"], row["end"]) == doc.spans[c]
        np.testing.assert_allclose(row["embedding"], doc.vectors[c], atol=1e-6)
