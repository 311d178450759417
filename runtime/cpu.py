"""CPU feature detection: which INT8 kernels suit the machine, and whether it computes bf16."""

from __future__ import annotations

import platform
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

    @property
    def int8_preset(self) -> str:
        """The Optimum quantization preset for this CPU: avx512_vnni, avx512, avx2 or arm64."""
        if self.machine in ("aarch64", "arm64"):
            return "arm64"
        if self.avx512 and self.vnni:
            return "avx512_vnni"
        if self.avx512:
            return "avx512"
        return "avx2"


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
    )
