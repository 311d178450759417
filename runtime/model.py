"""`Model`: a loaded artifact that turns texts into sentence embeddings, with no torch."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from .errors import ArtifactError
from .manifest import Manifest, Pooling, Precision, Variant
from .pooling import l2_normalize, pool
from .session import Device, create_session
from .tokenization import Batch, TextEncoder, is_truncated


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's max_seq_length and were cut."""


class Model:
    """An exported bertx artifact, ready to embed.

    Example:
        >>> import bertx
        >>> model = bertx.Model.from_pretrained("models/all-MiniLM-L6-v2", variant="int8")
        >>> vectors = model.embed(["A man is eating food.", "A cat sleeps."])
        >>> vectors.shape
        (2, 384)

    A `Model` holds one onnxruntime session and one tokenizer, neither of which changes after
    loading, so the same instance may be used from several threads at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        variant: Precision | str = Precision.FP32,
        device: Device | str = Device.CPU,
        threads: int | None = None,
        allow_fallback: bool = False,
    ) -> None:
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)
        self.variant: Variant = self.manifest.variant(variant)
        self.device = Device(device)
        onnx_path = self.path / self.variant.file
        _check_file(onnx_path, self.variant.size_bytes, what=f"{self.variant.precision.value} model")
        self.tokenizer = _load_tokenizer(self.path, self.manifest)
        self.session = create_session(onnx_path, self.device, threads, allow_fallback)
        declared = {i.name for i in self.session.get_inputs()}
        if declared != set(self.manifest.inputs):
            raise ArtifactError(
                f"{self.variant.file} takes inputs {sorted(declared)} but the manifest says "
                f"{sorted(self.manifest.inputs)}; the artifact folder is inconsistent, re-export it"
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        variant: Precision | str = Precision.FP32,
        device: Device | str = Device.CPU,
        threads: int | None = None,
        allow_fallback: bool = False,
    ) -> Model:
        """Load an artifact folder written by `bertx export`.

        Args:
            path: The artifact folder (it holds bertx.json).
            variant: fp32 (default), int8 or fp16.
            device: "cpu" (default) or "cuda".
            threads: onnxruntime intra-op threads; default lets onnxruntime choose.
            allow_fallback: Run on the CPU with a warning when CUDA is asked for but unavailable,
                instead of raising `ProviderError`.
        """
        return cls(path, variant, device, threads, allow_fallback)

    @property
    def hidden_size(self) -> int:
        """Width of every embedding this model returns."""
        return self.manifest.architecture.hidden_size

    @property
    def max_seq_length(self) -> int:
        """Texts are truncated to this many tokens, special tokens included."""
        return self.tokenizer.max_length

    def embed(
        self,
        texts: Sequence[str],
        pooling: Pooling | str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Embed texts into one float32 vector each.

        Args:
            texts: The texts; an empty list gives an array of shape (0, hidden_size).
            pooling: cls, mean or max; default from the manifest.
            normalize: L2-normalize each vector; default from the manifest.
            batch_size: Texts per onnxruntime call. Texts are sorted by length inside the call so
                that batches carry little padding; the result keeps the input order.

        Returns:
            A float32 array of shape (len(texts), hidden_size).

        Raises:
            InputError: `texts` is not a list of strings (the message names the bad item).
        """
        mode = Pooling(pooling) if pooling is not None else self.manifest.defaults.pooling
        unit = self.manifest.defaults.normalize if normalize is None else normalize
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        encodings = self.tokenizer.encode(texts)
        cut = sum(is_truncated(e) for e in encodings)
        if cut:
            warnings.warn(
                f"{cut} of {len(encodings)} texts were longer than {self.max_seq_length} tokens and were truncated",
                TruncationWarning,
                stacklevel=2,
            )
        out = np.empty((len(encodings), self.hidden_size), dtype=np.float32)
        for rows, batch in self._batches(encodings, batch_size):
            hidden = self.session.run([self.manifest.last_output], batch.feeds(self.manifest.inputs))[0]
            out[rows] = pool(hidden, batch.mask, mode)
        return l2_normalize(out) if unit else out

    def _batches(self, encodings: Sequence[Encoding], batch_size: int) -> Iterator[tuple[np.ndarray, Batch]]:
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield rows, self.tokenizer.pad([encodings[i] for i in rows])

    def __repr__(self) -> str:
        return (
            f"Model({str(self.path)!r}, variant={self.variant.precision.value!r}, "
            f"device={self.device.value!r}, hidden_size={self.hidden_size})"
        )


def _check_file(path: Path, size: int, what: str) -> None:
    if not path.is_file():
        raise ArtifactError(f"{what} file {path} is missing; the artifact folder is incomplete, re-export it")
    actual = path.stat().st_size
    if actual != size:
        raise ArtifactError(
            f"{what} file {path.name} is {actual} bytes but the manifest says {size}: "
            "it is truncated or was replaced; re-export the model"
        )


def _load_tokenizer(folder: Path, manifest: Manifest) -> TextEncoder:
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
