"""Checks on the files of an artifact folder: before they are used, and all of them for `bertx verify`."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ArtifactError
from .manifest import Manifest
from .tokenization import TextEncoder

FileStatus = Literal["ok", "missing", "size differs", "sha256 differs"]


@dataclass(frozen=True)
class FileCheck:
    """One file of an artifact checked against its manifest."""

    file: str
    what: str  # tokenizer, fp32 model, int8 weights, …
    status: FileStatus
    size_bytes: int | None  # on disk; None when missing
    expected_bytes: int | None  # as the manifest records it; None where it records no size (the tokenizer)
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the file is present and matches the manifest."""
        return self.status == "ok"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, size: int, what: str, sha256: str | None = None) -> None:
    """Raise `ArtifactError` if a file the manifest lists is missing, not the size it recorded, or (when
    `sha256` is given) not the bytes it recorded."""
    if not path.is_file():
        raise ArtifactError(f"{what} file {path} is missing; the artifact folder is incomplete, re-export it")
    actual = path.stat().st_size
    if actual != size:
        raise ArtifactError(
            f"{what} file {path.name} is {actual} bytes but the manifest says {size}: "
            "it is truncated or was replaced; re-export the model"
        )
    if sha256 is not None and sha256_file(path) != sha256:
        raise ArtifactError(
            f"{what} file {path.name} does not match the sha256 recorded at export: it is corrupted or was "
            f"replaced. Re-export the model, or run `bertx verify {path.parent}` to see every file; "
            "verify=False (--no-verify) skips this check"
        )


def verify_artifact(folder: Path) -> list[FileCheck]:
    """Check every file the manifest lists (tokenizer, each variant's graph and its weight files)
    against the size and sha256 recorded at export.

    Raises:
        ArtifactError: the folder or its bertx.json is missing or unreadable.
    """
    manifest = Manifest.load(folder)
    # (file, sha256, size) → what it is; variants that share a file (bf16 runs model.onnx through
    # OpenVINO) have it hashed once.
    files: dict[tuple[str, str, int | None], list[str]] = {}
    files[manifest.tokenizer.file, manifest.tokenizer.sha256, None] = ["tokenizer"]
    for precision, variant in manifest.variants.items():
        files.setdefault((variant.file, variant.sha256, variant.size_bytes), []).append(f"{precision.value} model")
        for name, facts in variant.extra_files.items():
            key = (name, str(facts.get("sha256", "")), _int_or_none(facts.get("size_bytes")))
            files.setdefault(key, []).append(f"{precision.value} weights")
    return [_check(folder, name, ", ".join(whats), sha256, size) for (name, sha256, size), whats in files.items()]


def _check(folder: Path, name: str, what: str, sha256: str, size: int | None) -> FileCheck:
    start = time.perf_counter()
    path = folder / name
    status: FileStatus
    if not path.is_file():
        return FileCheck(name, what, "missing", None, size, time.perf_counter() - start)
    actual = path.stat().st_size
    if size is not None and actual != size:
        status = "size differs"
    elif sha256_file(path) != sha256:
        status = "sha256 differs"
    else:
        status = "ok"
    return FileCheck(name, what, status, actual, size, time.perf_counter() - start)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def load_tokenizer(folder: Path, manifest: Manifest) -> TextEncoder:
    """The artifact's tokenizer, checked against the manifest (sha256) and the model (vocabulary size)."""
    info = manifest.tokenizer
    path = folder / info.file
    if not path.is_file():
        raise ArtifactError(f"tokenizer file {path} is missing; the artifact folder is incomplete, re-export it")
    if sha256_file(path) != info.sha256:
        raise ArtifactError(
            f"{info.file} does not match the model it was exported with (sha256 differs from the manifest); "
            "put the original tokenizer back or re-export the model"
        )
    encoder = TextEncoder(path, manifest.defaults.max_seq_length, info.pad_token_id)
    if encoder.vocab_size > manifest.architecture.vocab_size:
        raise ArtifactError(
            f"{info.file} has {encoder.vocab_size} tokens but the model's embedding table has "
            f"{manifest.architecture.vocab_size}: tokenizer and model do not match"
        )
    return encoder
