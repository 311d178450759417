"""The encoder architectures bertx exports, and why others are not supported yet.

Decided by what Optimum exports with every hidden state, what ONNX Runtime's graph fusion knows, and what
passes the parity gate against PyTorch (each supported type is exported and checked in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import UnsupportedModelError


class Positions(str, Enum):
    """How a model type numbers its positions, which sets the longest text it can take."""

    ABSOLUTE = "absolute"  # 0 … max_position_embeddings - 1
    AFTER_PADDING = "after padding"  # padding_idx + 1 onwards: two of RoBERTa's 514 positions are unusable
    RELATIVE = "relative"  # relative or rotary; max_position_embeddings is the trained length


# Why a type is exported unfused: ONNX Runtime's transformer optimizer has no fusion for it.
NO_FUSION = "ONNX Runtime's graph optimizer has no fusion for this type: exported unfused"


@dataclass(frozen=True)
class ModelType:
    """A transformers `model_type` bertx exports.

    Attributes:
        unfused: Why its graph is not fused, when it is not.
        reads_padding: Its layers read the padded positions (ConvBERT's convolution spans them), so a text's
            vectors would depend on its batch: it is batched only with texts of its own length.
    """

    name: str
    family: str
    positions: Positions
    examples: str
    unfused: str | None = None
    reads_padding: bool = False

    def max_length(self, max_position_embeddings: int, pad_token_id: int | None) -> int:
        """The most tokens (special tokens included) one text may have."""
        if self.positions is Positions.AFTER_PADDING:
            return max_position_embeddings - (int(pad_token_id or 0) + 1)
        return max_position_embeddings


SUPPORTED = {
    t.name: t
    for t in (
        ModelType(
            "bert", "BERT", Positions.ABSOLUTE, "bert-base-uncased, all-MiniLM-L6-v2, bge-small-en-v1.5, e5-base-v2"
        ),
        ModelType("distilbert", "DistilBERT", Positions.ABSOLUTE, "distilbert-base-uncased, msmarco-distilbert"),
        ModelType("roberta", "RoBERTa", Positions.AFTER_PADDING, "roberta-base, all-distilroberta-v1"),
        ModelType(
            "xlm-roberta",
            "XLM-RoBERTa",
            Positions.AFTER_PADDING,
            "multilingual-e5, bge-m3, paraphrase-multilingual-mpnet",
        ),
        ModelType("camembert", "CamemBERT", Positions.AFTER_PADDING, "camembert-base"),
        ModelType("mpnet", "MPNet", Positions.AFTER_PADDING, "all-mpnet-base-v2, multi-qa-mpnet"),
        ModelType("electra", "ELECTRA", Positions.ABSOLUTE, "electra-base-discriminator"),
        ModelType("albert", "ALBERT", Positions.ABSOLUTE, "albert-base-v2"),
        ModelType("deberta-v2", "DeBERTa-v2/v3", Positions.RELATIVE, "deberta-v3-base"),
        ModelType("modernbert", "ModernBERT", Positions.RELATIVE, "gte-modernbert-base, modernbert-embed-base"),
        ModelType("roformer", "RoFormer", Positions.RELATIVE, "roformer-chinese-base", NO_FUSION),
        ModelType("mobilebert", "MobileBERT", Positions.ABSOLUTE, "mobilebert-uncased", NO_FUSION),
        ModelType("convbert", "ConvBERT", Positions.ABSOLUTE, "conv-bert-base", NO_FUSION, reads_padding=True),
        ModelType("ernie", "ERNIE", Positions.ABSOLUTE, "ernie-3.0-base-zh, ernie-2.0-base-en", NO_FUSION),
    )
}

# Types tried and refused, with the reason a user should see.
NOT_YET = {
    "deberta": "INT8 quantization fails on its graph (ONNX Runtime's shape inference cannot read it)",
    "big_bird": "its block-sparse attention is traced as full attention, so long texts would differ from PyTorch",
    "longformer": "its exported graph only runs at the length it was traced with",
    "xlm": "it has no fast (tokenizers) tokenizer",
}


def supported_type(model_type: str) -> ModelType:
    """The supported `model_type`, or `UnsupportedModelError` saying why not and what is supported."""
    found = SUPPORTED.get(model_type)
    if found is not None:
        return found
    why = NOT_YET.get(model_type)
    listed = ", ".join(SUPPORTED)
    reason = f": {why}" if why else ""
    raise UnsupportedModelError(f"model type {model_type!r} is not supported yet{reason}. bertx exports {listed}")


def reads_padding(model_type: str) -> bool:
    """Whether texts of this type must be batched only with texts of their own length (see `ModelType`)."""
    found = SUPPORTED.get(model_type)
    return found is not None and found.reads_padding
