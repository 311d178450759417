"""Verified artifacts: a same-size corrupted file is caught by its sha256, by `check_file`, by loading
and by `bertx verify`."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import bertx
from bertx.artifact import check_file, sha256_file, verify_artifact
from bertx.errors import ArtifactError
from bertx.manifest import Manifest

from conftest import run_cli as run


def copy(artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifact, tmp_path / "artifact", ignore=shutil.ignore_patterns("*-cache")))


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def corrupted(tiny_artifact: Path, tmp_path: Path) -> Path:
    folder = copy(tiny_artifact, tmp_path)
    size = (folder / "model.onnx").stat().st_size
    flip_middle_byte(folder / "model.onnx")
    assert (folder / "model.onnx").stat().st_size == size
    return folder


def test_sha256_file_reads_in_blocks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # over 2 MiB: several blocks and a partial one
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_check_file_catches_a_flipped_byte(corrupted: Path) -> None:
    fp32 = Manifest.load(corrupted).variant("fp32")
    path = corrupted / fp32.file
    with pytest.raises(ArtifactError, match=r"sha256 recorded at export.*bertx verify.*--no-verify"):
        check_file(path, fp32.size_bytes, "fp32 model", sha256=fp32.sha256)
    check_file(path, fp32.size_bytes, "fp32 model")  # the size alone cannot tell


def test_loading_checks_the_sha256_unless_told_not_to(corrupted: Path) -> None:
    with pytest.raises(ArtifactError, match=r"model\.onnx .*sha256"):
        bertx.Model.from_pretrained(corrupted)
    bertx.Model.from_pretrained(corrupted, verify=False)  # loads, with silently different weights


def test_verify_cli_names_the_corrupted_file(corrupted: Path) -> None:
    result = run("verify", str(corrupted))
    assert result.returncode == 2, result.stdout + result.stderr
    error = " ".join(result.stderr.split())  # one message, though rich wraps it at the console width
    assert error.startswith("error:") and error.count("error:") == 1 and "Traceback" not in error
    assert "model.onnx (sha256 differs)" in error
    assert any(line.startswith("sha256 differs") and "model.onnx" in line for line in result.stdout.splitlines())
    assert any(line.startswith("ok") and "model.int8.onnx" in line for line in result.stdout.splitlines())


def test_verify_cli_passes_an_untouched_copy(tiny_artifact: Path, tmp_path: Path) -> None:
    folder = copy(tiny_artifact, tmp_path)
    result = run("verify", str(folder))
    assert result.returncode == 0, result.stderr
    checks = verify_artifact(folder)
    assert f"all {len(checks)} files match" in result.stdout
    manifest = Manifest.load(folder)
    listed = {manifest.tokenizer.file} | {v.file for v in manifest.variants.values()}
    listed |= {name for v in manifest.variants.values() for name in v.extra_files}
    assert {c.file for c in checks} == listed and all(c.ok for c in checks)


def test_verify_reports_missing_and_resized_files(tiny_artifact: Path, tmp_path: Path) -> None:
    folder = copy(tiny_artifact, tmp_path)
    (folder / "model.int8.onnx").unlink()
    with (folder / "model.fp16.onnx").open("ab") as handle:
        handle.write(b"\0")
    status = {c.file: c.status for c in verify_artifact(folder)}
    assert status["model.int8.onnx"] == "missing"
    assert status["model.fp16.onnx"] == "size differs"
    assert status["model.onnx"] == status["tokenizer.json"] == "ok"


def test_verify_without_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a bertx artifact"):
        verify_artifact(tmp_path)
    result = run("verify", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
