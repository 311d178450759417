"""Checks on the files of an artifact folder before they are used."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ArtifactError
from .manifest import Manifest
from .tokenization import TextEncoder


def check_file(path: Path, size: int, what: str) -> None:
    """Raise `ArtifactError` if a file the manifest lists is missing or not the size it recorded."""
    if not path.is_file():
        raise ArtifactError(f"{what} file {path} is missing; the artifact folder is incomplete, re-export it")
    actual = path.stat().st_size
    if actual != size:
        raise ArtifactError(
            f"{what} file {path.name} is {actual} bytes but the manifest says {size}: "
            "it is truncated or was replaced; re-export the model"
        )


def load_tokenizer(folder: Path, manifest: Manifest) -> TextEncoder:
    """The artifact's tokenizer, checked against the manifest (sha256) and the model (vocabulary size)."""
    info = manifest.tokenizer
    path = folder / info.file
    if not path.is_file():
        raise ArtifactError(f"tokenizer file {path} is missing; the artifact folder is incomplete, re-export it")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != info.sha256:
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
