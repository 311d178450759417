"""The types every inference engine shares: which engine, at which precision, how to open a graph, and the
`Runner` interface (`runner.run(output_names, feeds)`) that model code calls without asking which engine
runs it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np

from .session import Device, TensorRTSettings


class Backend(str, Enum):
    """The inference engine a graph file is made for."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class InferencePrecision(str, Enum):
    """The precision OpenVINO computes in; f32 is exact, bf16 needs AVX-512 BF16 or AMX."""

    F32 = "f32"
    BF16 = "bf16"


class Runner(Protocol):
    """An opened graph: inputs by name in, the requested outputs out (float32 numpy arrays)."""

    device: Device

    @property
    def input_names(self) -> tuple[str, ...]:
        """The graph's input names."""

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch and return only the named outputs, in order."""


@dataclass(frozen=True)
class GraphFile:
    """A graph file and how it must be run: which backend, and in which precision for OpenVINO."""

    path: Path
    backend: Backend = Backend.ONNXRUNTIME
    precision: InferencePrecision | None = None


@dataclass(frozen=True)
class RunOptions:
    """How to open a graph: device, threads and the engine-specific settings."""

    device: Device = Device.CPU
    threads: int | None = None
    allow_fallback: bool = False
    tensorrt: TensorRTSettings | None = None
    cpu_arena: bool = True
    cache_dir: Path | None = None  # OpenVINO's compiled-model cache; None caches nothing
