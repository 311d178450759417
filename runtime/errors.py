"""The errors bertx raises for user mistakes and unusable artifacts.

`caller_stacklevel` makes a warning name the caller's line, not bertx's.

Every error a user can cause is a `BertxError`; the CLI prints it as one line and exits with code 2.
Subclasses also derive from the built-in exception a caller would naturally catch.
"""

from __future__ import annotations

import os
import sys


class BertxError(Exception):
    """Base class of every error bertx raises on purpose."""


class ArtifactError(BertxError, ValueError):
    """An artifact folder is missing, incomplete, corrupt, or inconsistent with itself."""


class VariantError(BertxError, ValueError):
    """A precision variant was asked for that the artifact does not hold."""


class ProviderError(BertxError, RuntimeError):
    """An onnxruntime execution provider was asked for that cannot be used here."""


class InputError(BertxError, TypeError):
    """Texts passed to the runtime are not what it accepts."""


class InputFileError(BertxError, ValueError):
    """An input file cannot be read or decoded."""


class ModelNotFoundError(BertxError, FileNotFoundError):
    """The model to export was found nowhere bertx looked."""


class UnsupportedModelError(BertxError, ValueError):
    """The model's architecture is not one bertx can export yet."""


class OutputExistsError(BertxError, FileExistsError):
    """The export target already exists and `force` was not given."""


class ExportError(BertxError, RuntimeError):
    """A step of the export failed."""


class ParityError(BertxError):
    """A variant's outputs differ from PyTorch by more than its thresholds allow."""


class MissingDependencyError(BertxError, ImportError):
    """An optional dependency needed by the requested feature is not installed."""


class OptionError(BertxError, ValueError):
    """A keyword argument has a value bertx does not accept; the message lists the valid ones."""


class HeadError(BertxError, ValueError):
    """A task (classify, tag, rerank) was asked of an artifact without the head it needs."""


class NonFiniteError(BertxError, ArithmeticError):
    """An engine returned NaN or infinity where a vector should be: never returned as a result."""


_PACKAGE = os.path.dirname(__file__) + os.sep


def caller_stacklevel() -> int:
    """The `stacklevel` that makes a warning raised here name the first line outside bertx, the
    caller's, whichever public method was called and however deep the call went inside bertx."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
