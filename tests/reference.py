"""Independent reference computations in PyTorch, for comparing bertx's outputs against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Short texts in several scripts, with an emoji and a two-letter one (the OpenVINO and server tests).
MIXED_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Unaffordable riverbank housing isn't new 🏠",
    "Der Bürgermeister eröffnete das Museum am 3. Mai.",
    "東京は日本の首都です。",
    "ok",
]


def torch_hidden_states(
    model_dir: Path, texts: list[str], max_length: int, truncation_side: str = "right"
) -> list[list[np.ndarray]]:
    """Per text, every hidden state (tokens, hidden) from transformers with output_hidden_states.

    Texts are run one at a time, so no padding is involved at all; the tokenizer is the model
    folder's own (transformers' AutoTokenizer), not bertx's, cutting a long text on `truncation_side`.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, truncation_side=truncation_side)
    model = AutoModel.from_pretrained(model_dir, output_hidden_states=True).eval()
    out = []
    for text in texts:
        inputs = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            result = model(**inputs)
        states = [h[0].numpy() for h in result.hidden_states]
        states[-1] = result.last_hidden_state[0].numpy()  # after a final norm, where the type has one (ModernBERT)
        out.append(states)
    return out


def torch_sentence_embeddings(
    model_dir: Path, texts: list[str], max_length: int, pooling: str, normalize: bool, truncation_side: str = "right"
) -> np.ndarray:
    """Sentence vectors pooled in torch from the last hidden state, one text at a time."""
    import torch

    rows = []
    for states in torch_hidden_states(model_dir, texts, max_length, truncation_side):
        last = torch.from_numpy(states[-1])
        if pooling == "cls":
            vec = last[0]
        elif pooling == "mean":
            vec = last.mean(dim=0)
        elif pooling == "max":
            vec = last.max(dim=0).values
        else:
            raise ValueError(pooling)
        if normalize:
            vec = torch.nn.functional.normalize(vec, dim=0)
        rows.append(vec.numpy())
    return np.stack(rows)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
