"""bertx: BERT-family embeddings from ONNX artifacts, served with onnxruntime, tokenizers and numpy."""

from .errors import ArtifactError, BertxError, InputError, ProviderError, VariantError
from .manifest import Manifest, Pooling, Precision
from .model import Model, TruncationWarning
from .session import Device, FallbackWarning

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BertxError",
    "Device",
    "FallbackWarning",
    "InputError",
    "Manifest",
    "Model",
    "Pooling",
    "Precision",
    "ProviderError",
    "TruncationWarning",
    "VariantError",
    "__version__",
]
