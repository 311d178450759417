"""Writing an artifact folder atomically: it is built in a hidden scratch folder beside the target and
renamed into place only when complete; an interrupted or killed export leaves nothing half-written, and
an existing artifact is replaced only with `force`, never a folder that is not a bertx artifact."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from bertx.errors import OutputExistsError
from bertx.manifest import MANIFEST_NAME

_PARTIAL = ".partial-"
_REPLACED = ".replaced-"


def scratch_folder(target: Path) -> Path:
    """The hidden folder this process builds `target` in."""
    return target.parent / f".{target.name}{_PARTIAL}{os.getpid()}"


def check_target(target: Path, force: bool) -> None:
    """Refuse a target that exists without `force`, and never replace anything but a bertx artifact."""
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; choose another --output")
    if not force:
        raise OutputExistsError(f"{target} already exists; pass --force to replace it")
    if any(target.iterdir()) and not (target / MANIFEST_NAME).is_file():
        raise OutputExistsError(
            f"{target} is a folder with other content, not a bertx artifact; --force only replaces artifacts, "
            "choose another --output"
        )


def move_into_place(built: Path, target: Path) -> None:
    """Rename the finished artifact onto `target`, keeping the old one until the new one is there."""
    backup = target.parent / f".{target.name}{_REPLACED}{os.getpid()}"
    if target.exists():
        os.replace(target, backup)
    try:
        os.replace(built, target)
    except BaseException:
        if backup.exists() and not target.exists():
            os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def remove_stale_partials(target: Path) -> None:
    """Clean up after exports that were killed outright (their process is gone).

    A scratch folder is deleted; an old artifact set aside for replacement is put back if the new
    one never arrived, else deleted.
    """
    if not target.parent.is_dir():
        return
    for marker in (_PARTIAL, _REPLACED):
        for leftover in target.parent.glob(f".{target.name}{marker}*"):
            pid = leftover.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            if marker == _REPLACED and not target.exists():
                os.replace(leftover, target)
            else:
                shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that a terminated export cleans up after itself."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
