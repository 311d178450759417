"""What the bench's engines are: their names, the loaded `Engine` (one encode function and its facts) and a
`Skipped` one; shared by bertx's own engines, PyTorch's and the peers'."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Encoder = Callable[[Sequence[str], int], np.ndarray]

PYTORCH = "pytorch-fp32"
ST_TORCH = "sentence-transformers"
ST_ONNX = "sentence-transformers-onnx"
OPTIMUM = "optimum-ort"
# The fastest things people run instead (see peers.py).
ST_QINT8 = "st-onnx-qint8"
ST_OPENVINO = "st-openvino"
OPENVINO_NNCF = "openvino-int8-nncf"
FASTEMBED = "fastembed"
PEERS = (ST_QINT8, ST_OPENVINO, OPENVINO_NNCF, FASTEMBED)


DEFAULT_BATCH = 32  # what sentence-transformers and most peers batch by when not told


@dataclass(frozen=True)
class Engine:
    """A loaded engine: `encode(texts, batch_size)` returns one float32 vector per text, batches cut by
    text count; `encode_default(texts)` runs the engine as its users run it untold (bertx: its token
    budget), or `encode(texts, 32)` where the engine has no other default."""

    name: str
    encode: Encoder
    size_bytes: int
    details: dict[str, str] = field(default_factory=dict)  # what ran, e.g. the precision OpenVINO chose
    default: Callable[[Sequence[str]], np.ndarray] | None = None

    def encode_default(self, texts: Sequence[str]) -> np.ndarray:
        return self.default(texts) if self.default is not None else self.encode(texts, DEFAULT_BATCH)


@dataclass(frozen=True)
class Skipped:
    """An engine that could not take part, and why."""

    name: str
    reason: str


def weights_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) or sum(
        f.stat().st_size for f in folder.glob("pytorch_model*.bin")
    )


def onnx_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*.onnx") if os.path.isfile(f))
