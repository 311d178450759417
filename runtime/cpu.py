"""CPU facts: which INT8 kernels suit the machine, whether it computes bf16, and how many CPUs this
process may use (affinity and cgroup quota)."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuInfo:
    """The CPU model and the instruction-set features that matter for ONNX Runtime's kernels."""

    model: str
    machine: str
    avx2: bool
    avx512: bool
    vnni: bool
    bf16: bool = False  # AVX-512 BF16 or AMX: bf16 matmuls in hardware (OpenVINO uses them)
    amx: bool = False  # Intel AMX tiles (amx_bf16 / amx_int8): oneDNN and onnxruntime route matmuls to them

    @property
    def cpu_class(self) -> str:
        """The class of kernels this CPU gets: amx, avx512_vnni, avx512, avx2 or arm64.

        AMX is a class of its own: oneDNN (OpenVINO) and onnxruntime run their INT8 and bf16 matmuls
        on its tiles, with other kernels, other speeds and other faults than AVX-512's.
        """
        if self.machine in ("aarch64", "arm64"):
            return "arm64"
        if self.amx:
            return "amx"
        if self.avx512 and self.vnni:
            return "avx512_vnni"
        if self.avx512:
            return "avx512"
        return "avx2"

    @property
    def int8_preset(self) -> str:
        """The Optimum quantization preset for this CPU: avx512_vnni, avx512, avx2 or arm64 (AMX CPUs
        take avx512_vnni's, which their tiles run)."""
        return "avx512_vnni" if self.cpu_class == "amx" else self.cpu_class

    @property
    def flags_key(self) -> str:
        """The features that change which kernels run, as one string (part of compile-cache keys)."""
        names = ("avx2", "avx512", "vnni", "bf16", "amx")
        return ",".join(name for name in names if getattr(self, name)) or "none"

    def describe(self) -> str:
        """One line for tables and reports: model, class and the flags that matter."""
        return f"{self.model} [{self.cpu_class}: {self.flags_key}]"


def cpu_info() -> CpuInfo:
    """Read the CPU model and flags (from /proc/cpuinfo on Linux; flags are False elsewhere)."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    return CpuInfo(
        model=model,
        machine=platform.machine().lower(),
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        vnni=bool({"avx512_vnni", "avx512vnni", "avx_vnni"} & flags),
        bf16=bool({"avx512_bf16", "amx_bf16"} & flags),
        amx=bool({"amx_bf16", "amx_int8", "amx_tile"} & flags),
    )


@dataclass(frozen=True)
class CpuBudget:
    """How many CPUs this process may use: its affinity mask and its cgroup CPU quota (containers).

    Left alone, the engines size their thread pools from the cores they detect, and a cgroup quota is
    not among what they read: a container given one CPU of a 64-core host would start dozens of threads
    that take turns on that one CPU and are throttled at every quota period.
    """

    host: int  # os.cpu_count()
    affinity: int  # CPUs in the affinity mask (the host count where the platform has no masks)
    quota: float | None  # cgroup quota in CPUs (quota / period, the smallest up the tree); None: no limit
    usable: int  # min(affinity, ceil(quota)), at least 1

    @property
    def restricted(self) -> bool:
        """True when the process may use fewer CPUs than the host has."""
        return self.usable < self.host


def cpu_budget(proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> CpuBudget:
    """Read this process's CPU affinity and cgroup (v2 or v1) CPU quota.

    Args:
        proc_cgroup: The process's cgroup membership file.
        cgroup_root: Where the cgroup hierarchies are mounted.
    """
    host = os.cpu_count() or 1
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else host
    quota = cgroup_quota(proc_cgroup, cgroup_root)
    usable = affinity if quota is None else min(affinity, math.ceil(quota))
    return CpuBudget(host=host, affinity=affinity, quota=quota, usable=max(1, usable))


def default_threads() -> int | None:
    """Threads for an engine when the caller gave none: the usable CPUs when the process is restricted
    (affinity or cgroup quota below the host's core count), else None to let the engine choose."""
    budget = cpu_budget()
    return budget.usable if budget.restricted else None


def cgroup_quota(
    proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """The cgroup CPU quota in CPUs, the smallest of the process's cgroup and its ancestors; None when
    there is none or it cannot be read (no cgroups, another OS)."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        fields = line.split(":", 2)  # "ID:CONTROLLERS:PATH"; v2's line is "0::PATH"
        if len(fields) != 3 or not fields[2].startswith("/"):
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: one unified hierarchy mounted at the root
            limits += _walk(cgroup_root, path, _v2_limit)
        elif "cpu" in controllers.split(","):
            for mount in dict.fromkeys((controllers, "cpu,cpuacct", "cpuacct,cpu", "cpu")):
                if (cgroup_root / mount).is_dir():
                    limits += _walk(cgroup_root / mount, path, _v1_limit)
                    break
    return min(limits, default=None)


def _walk(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The limits set on a cgroup and each of its ancestors up to the mount. Inside a container the
    process's path (say /docker/abc) often names the host's view: the folders that do not exist are
    skipped, and the container's own limit sits at the mount itself."""
    parts = [p for p in path.split("/") if p]
    limits = []
    for depth in range(len(parts), -1, -1):
        limit = read(mount.joinpath(*parts[:depth]))
        if limit is not None:
            limits.append(limit)
    return limits


def _v2_limit(folder: Path) -> float | None:
    """`cpu.max` holds "QUOTA PERIOD" in microseconds, QUOTA "max" for no limit."""
    fields = _read(folder / "cpu.max").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_limit(folder: Path) -> float | None:
    """`cpu.cfs_quota_us` over `cpu.cfs_period_us`; a quota of -1 means no limit."""
    return _ratio(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
