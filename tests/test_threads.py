"""Threads from what the process may use: CPU affinity and cgroup quotas (v2 and v1), on fake cgroup
trees and on a real process pinned to one CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertx import cpu
from bertx.cpu import CpuBudget, cgroup_quota, cpu_budget, default_threads

HOST = os.cpu_count() or 1
AFFINITY = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else HOST


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


def fake_cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership, encoding="utf-8")
    root = tmp_path / "sys-fs-cgroup"
    root.mkdir()
    write(root, files)
    return proc, root


def test_v2_quota_is_the_smallest_up_the_tree(tmp_path: Path) -> None:
    proc, root = fake_cgroup(
        tmp_path,
        "0::/kubepods/pod1/app\n",
        {
            "kubepods/cpu.max": "400000 100000",
            "kubepods/pod1/cpu.max": "max 100000",
            "kubepods/pod1/app/cpu.max": "150000 100000",
        },
    )
    assert cgroup_quota(proc, root) == 1.5
    budget = cpu_budget(proc, root)
    assert budget.quota == 1.5
    assert budget.usable == min(AFFINITY, 2)  # a 1.5-CPU quota runs two threads, throttled


def test_v2_parent_limit_applies_to_an_unlimited_child(tmp_path: Path) -> None:
    proc, root = fake_cgroup(
        tmp_path,
        "0::/a/b\n",
        {"a/cpu.max": "50000 100000", "a/b/cpu.max": "max 100000"},
    )
    assert cgroup_quota(proc, root) == 0.5
    budget = cpu_budget(proc, root)
    assert budget.usable == 1  # never fewer than one
    assert budget.restricted == (HOST > 1)


def test_v2_max_everywhere_is_no_limit(tmp_path: Path) -> None:
    proc, root = fake_cgroup(tmp_path, "0::/user.slice/session\n", {"user.slice/session/cpu.max": "max 100000"})
    assert cgroup_quota(proc, root) is None
    budget = cpu_budget(proc, root)
    assert budget == CpuBudget(host=HOST, affinity=AFFINITY, quota=None, usable=AFFINITY)
    assert budget.restricted == (AFFINITY < HOST)


def test_v1_quota_under_the_cpu_cpuacct_mount(tmp_path: Path) -> None:
    proc, root = fake_cgroup(
        tmp_path,
        "9:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            # Another controller's limit-looking files are not read.
            "memory/docker/abc/cpu.cfs_quota_us": "10000",
            "memory/docker/abc/cpu.cfs_period_us": "100000",
        },
    )
    assert cgroup_quota(proc, root) == 2.5
    assert cpu_budget(proc, root).usable == min(AFFINITY, 3)


def test_v1_minus_one_is_no_limit(tmp_path: Path) -> None:
    proc, root = fake_cgroup(
        tmp_path,
        "3:cpu:/system.slice\n",
        {"cpu/system.slice/cpu.cfs_quota_us": "-1", "cpu/system.slice/cpu.cfs_period_us": "100000"},
    )
    assert cgroup_quota(proc, root) is None


def test_v1_container_sees_its_own_cgroup_at_the_mount(tmp_path: Path) -> None:
    # Without a cgroup namespace the path names the host's view (/docker/abc), which does not exist
    # inside the container: the container's own limit is at the mount itself.
    proc, root = fake_cgroup(
        tmp_path,
        "4:cpu,cpuacct:/docker/abc\n",
        {"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"},
    )
    assert cgroup_quota(proc, root) == 1.0
    assert cpu_budget(proc, root).usable == 1


def test_no_cgroups_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path / "absent", tmp_path) is None
    proc, root = fake_cgroup(tmp_path, "0::/app\n", {"app/cpu.max": "garbage"})
    assert cgroup_quota(proc, root) is None


def test_default_threads_only_when_restricted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "cpu_budget", lambda: CpuBudget(host=64, affinity=64, quota=1.5, usable=2))
    assert default_threads() == 2
    monkeypatch.setattr(cpu, "cpu_budget", lambda: CpuBudget(host=64, affinity=4, quota=None, usable=4))
    assert default_threads() == 4
    monkeypatch.setattr(cpu, "cpu_budget", lambda: CpuBudget(host=64, affinity=64, quota=None, usable=64))
    assert default_threads() is None


pinned = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or AFFINITY < 2, reason="needs os.sched_setaffinity and two CPUs"
)

# Pin the process to one CPU before anything starts a thread pool, then report onnxruntime's threads.
PINNED = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import bertx
threads = None if sys.argv[2] == "none" else int(sys.argv[2])
model = bertx.Model.from_pretrained(sys.argv[1], threads=threads)
print(model.runner.session.get_session_options().intra_op_num_threads)
"""


def pinned_threads(artifact: Path, threads: int | None) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PINNED, str(artifact), str(threads).lower()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


@pinned
def test_onnxruntime_threads_follow_the_affinity(tiny_artifact: Path) -> None:
    assert pinned_threads(tiny_artifact, None) == 1
    assert pinned_threads(tiny_artifact, 2) == 2  # an explicit threads= still wins


def test_openvino_threads_follow_the_budget(tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenVINO clamps its threads to the affinity mask by itself (asked for 2 on one pinned CPU it runs
    # 1), so a restricted budget is faked here: a cgroup quota is what it would not see.
    pytest.importorskip("openvino")
    import bertx
    from bertx import session

    monkeypatch.setattr(session, "default_threads", lambda: 1)
    model = bertx.Model.from_pretrained(tiny_artifact, device="openvino")
    assert model.runner._compiled.get_property("INFERENCE_NUM_THREADS") == 1  # type: ignore[attr-defined]
    if AFFINITY >= 2:
        model = bertx.Model.from_pretrained(tiny_artifact, device="openvino", threads=2)
        assert model.runner._compiled.get_property("INFERENCE_NUM_THREADS") == 2  # type: ignore[attr-defined]


@pinned
def test_doctor_shows_the_cpus_the_process_may_use() -> None:
    script = (
        "import os, sys\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from bertx.cli import app\napp(['doctor'], prog_name='bertx')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("cpus"))
    assert f"1 usable (affinity 1 of {HOST}, cgroup quota" in line
    assert line.endswith("default threads: 1")
