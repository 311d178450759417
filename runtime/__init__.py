"""bertx: BERT-family embeddings from ONNX artifacts, served with onnxruntime, tokenizers and numpy."""

from .errors import (
    ArtifactError,
    BertxError,
    HeadError,
    InputError,
    NonFiniteError,
    OptionError,
    ProviderError,
    VariantError,
)
from .layers import Combine
from .loading import LoadOptions
from .manifest import Manifest, Pooling, Precision
from .model import Model, TruncationWarning
from .options import EncodeOptions
from .outputs import TokenEmbeddings, WordEmbeddings, WordMerge
from .session import Device, FallbackWarning
from .static import StaticEmbeddings
from .tasks import Classification, Entity, Ranked, Tagging

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BertxError",
    "Classification",
    "Combine",
    "Device",
    "EncodeOptions",
    "Entity",
    "FallbackWarning",
    "HeadError",
    "InputError",
    "LoadOptions",
    "Manifest",
    "Model",
    "NonFiniteError",
    "OptionError",
    "Pooling",
    "Precision",
    "ProviderError",
    "Ranked",
    "StaticEmbeddings",
    "Tagging",
    "TokenEmbeddings",
    "TruncationWarning",
    "VariantError",
    "WordEmbeddings",
    "WordMerge",
    "__version__",
]
