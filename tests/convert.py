"""Re-write a real BERT checkpoint as a DistilBertModel or a RobertaModel with the same outputs.

No DistilBERT or RoBERTa weights ship offline here; mapping the packaged MiniLM (a real BertModel) onto
those architectures exercises their export paths with real weights, and the original BERT stays the
independent reference. The BERT WordPiece tokenizer files are kept as they are (`tokenizer_class`
BertTokenizer in tokenizer_config.json, so `AutoTokenizer` still gives the BERT tokenizer), and so are
the sentence-transformers files (modules.json, pooling, max_seq_length), so the converted folders have
the original's defaults.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# Files carried over unchanged: the tokenizer and the sentence-transformers description.
KEPT_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
KEPT_FOLDERS = ("1_Pooling", "2_Normalize")
# BERT's encoder-layer parameters and where DistilBERT keeps them.
DISTILBERT_LAYER = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}
# DistilBERT hard-codes every LayerNorm's eps; a BERT with another eps cannot be mapped exactly.
DISTILBERT_EPS = 1e-12


def to_distilbert(bert_folder: Path, out_folder: Path) -> Path:
    """Save `bert_folder`'s BertModel as an equivalent DistilBertModel in `out_folder`.

    DistilBERT has no segment embeddings and always behaves as segment 0: BERT's
    `token_type_embeddings[0]` is added to every word row. There is no pooler.
    """
    from transformers import DistilBertConfig, DistilBertModel

    bert, weights = _load_bert(bert_folder)
    if bert.layer_norm_eps != DISTILBERT_EPS or bert.hidden_act != "gelu":
        raise ValueError(
            f"DistilBERT needs layer_norm_eps 1e-12 and gelu, got {bert.layer_norm_eps} and {bert.hidden_act}"
        )
    config = DistilBertConfig(
        vocab_size=bert.vocab_size,
        max_position_embeddings=bert.max_position_embeddings,
        sinusoidal_pos_embds=False,
        n_layers=bert.num_hidden_layers,
        n_heads=bert.num_attention_heads,
        dim=bert.hidden_size,
        hidden_dim=bert.intermediate_size,
        activation="gelu",
        pad_token_id=bert.pad_token_id,
        architectures=["DistilBertModel"],
    )
    state = {
        # BERT sums (word + segment) + position; folding the segment row into the word rows keeps
        # that order, so the float32 sums are the same bits (folded into the position rows they
        # would round differently: ~1e-5 apart after six layers).
        "embeddings.word_embeddings.weight": weights["embeddings.word_embeddings.weight"]
        + weights["embeddings.token_type_embeddings.weight"][0],
        "embeddings.position_embeddings.weight": weights["embeddings.position_embeddings.weight"],
        "embeddings.LayerNorm.weight": weights["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.bias": weights["embeddings.LayerNorm.bias"],
    }
    for i in range(bert.num_hidden_layers):
        for src, dst in DISTILBERT_LAYER.items():
            for kind in ("weight", "bias"):
                state[f"transformer.layer.{i}.{dst}.{kind}"] = weights[f"encoder.layer.{i}.{src}.{kind}"]
    model = DistilBertModel(config)
    _load_exactly(model, state)
    return _save(model, bert_folder, out_folder)


def to_roberta(bert_folder: Path, out_folder: Path) -> Path:
    """Save `bert_folder`'s BertModel as an equivalent RobertaModel (BERT's pooler kept) in `out_folder`.

    RoBERTa numbers positions from `pad_token_id + 1`: with BERT's [PAD] = 0 a text's positions are
    1..n, so BERT's 512 position rows move to rows 1..512 of a 513-row table (row 0 is never used by a
    real token). One segment: BERT's `token_type_embeddings[0]`.
    """
    import torch
    from transformers import RobertaConfig, RobertaModel

    bert, weights = _load_bert(bert_folder)
    pad = int(bert.pad_token_id)
    positions = weights["embeddings.position_embeddings.weight"]
    table = torch.zeros(positions.shape[0] + pad + 1, positions.shape[1], dtype=positions.dtype)
    table[pad + 1 :] = positions
    config = RobertaConfig(
        vocab_size=bert.vocab_size,
        hidden_size=bert.hidden_size,
        num_hidden_layers=bert.num_hidden_layers,
        num_attention_heads=bert.num_attention_heads,
        intermediate_size=bert.intermediate_size,
        hidden_act=bert.hidden_act,
        max_position_embeddings=table.shape[0],
        type_vocab_size=1,
        layer_norm_eps=bert.layer_norm_eps,
        pad_token_id=pad,
        bos_token_id=None,
        eos_token_id=None,
        architectures=["RobertaModel"],
    )
    state = {key: value for key, value in weights.items() if key != "embeddings.position_ids"}
    state["embeddings.position_embeddings.weight"] = table
    state["embeddings.token_type_embeddings.weight"] = weights["embeddings.token_type_embeddings.weight"][:1]
    model = RobertaModel(config)
    _load_exactly(model, state)
    return _save(model, bert_folder, out_folder)


def _load_bert(folder: Path) -> tuple[Any, dict[str, Any]]:
    from transformers import BertModel

    model = BertModel.from_pretrained(folder)
    if model.config.position_embedding_type != "absolute":
        raise ValueError(f"only absolute position embeddings map, got {model.config.position_embedding_type}")
    return model.config, {key: value.detach().clone() for key, value in model.state_dict().items()}


def _load_exactly(model: Any, state: dict[str, Any]) -> None:
    # Buffers (position_ids, token_type_ids) keep the values the constructor gave them.
    buffers = {name for name, _ in model.named_buffers()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if key not in buffers]
    if missing or unexpected:
        raise ValueError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")


def _save(model: Any, bert_folder: Path, out_folder: Path) -> Path:
    out_folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out_folder, safe_serialization=True)
    for name in KEPT_FILES:
        if (bert_folder / name).is_file():
            shutil.copy2(bert_folder / name, out_folder / name)
    for name in KEPT_FOLDERS:
        if (bert_folder / name).is_dir():
            shutil.copytree(bert_folder / name, out_folder / name, dirs_exist_ok=True)
    return out_folder
