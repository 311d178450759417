"""Shared fixtures: tiny random models built in memory, and artifacts exported once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_INT8_MIN_COSINE = 0.97  # the session MiniLM's INT8 gate (fixed recipe; see minilm_artifact)
WORDS = (
    "the a an is was be to of and in on for with as at by it this that he she they we you i not no yes "
    "cat dog man woman eat food play music river bank money city park sun rain day night good bad new old "
    "quick brown fox jump over lazy run walk read book write code model test data time year people world"
).split()


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """`bertx ARGS` in a fresh process, offline, with a wide terminal so that tables do not wrap."""
    return subprocess.run(
        [sys.executable, "-m", "bertx.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=300,
        env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )


def processes_with(*parts: bytes) -> list[int]:
    """Process ids whose command line (arguments joined by NUL bytes) contains every one of `parts`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if all(part in command for part in parts):
                found.append(int(entry.name))
    return found


def _wordpiece_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-éü")
    return list(dict.fromkeys(specials + chars + [f"##{c}" for c in chars] + WORDS))


def make_tiny_model(folder: Path, model_type: str = "bert", layers: int = 2, seed: int = 0) -> Path:
    """Save a random-weight encoder of `model_type` with a small real tokenizer into `folder`."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertModel,
        DistilBertTokenizerFast,
        RobertaConfig,
        RobertaModel,
        RobertaTokenizerFast,
    )

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if model_type in ("bert", "distilbert"):
        vocab = folder / "vocab.txt"
        vocab.write_text("\n".join(_wordpiece_vocab()) + "\n", encoding="utf-8")
        n = len(_wordpiece_vocab())
        if model_type == "bert":
            tokenizer = BertTokenizerFast(vocab_file=str(vocab))
            model = BertModel(
                BertConfig(
                    vocab_size=n,
                    hidden_size=32,
                    num_hidden_layers=layers,
                    num_attention_heads=4,
                    intermediate_size=64,
                    max_position_embeddings=128,
                )
            )
        else:
            tokenizer = DistilBertTokenizerFast(vocab_file=str(vocab))
            model = DistilBertModel(
                DistilBertConfig(
                    vocab_size=n, dim=32, n_layers=layers, n_heads=4, hidden_dim=64, max_position_embeddings=128
                )
            )
    elif model_type == "roberta":
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            [" ".join(WORDS)] * 20,
            vocab_size=400,
            min_frequency=1,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        )
        bpe.save_model(str(folder))
        tokenizer = RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
        model = RobertaModel(
            RobertaConfig(
                vocab_size=bpe.get_vocab_size(),
                hidden_size=32,
                num_hidden_layers=layers,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=130,
                pad_token_id=1,
                type_vocab_size=1,
            )
        )
    else:
        raise ValueError(model_type)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def export_tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Export a tiny model with the given options into a fresh folder and return the artifact path."""
    from bertx.exporter import ExportOptions, export_model

    def run(model: Path, **options: object) -> Path:
        out = tmp_path_factory.mktemp("artifact") / "out"
        return export_model(ExportOptions(model=str(model), output=out, **options), quiet_mode=True).path  # type: ignore[arg-type]

    return run


@pytest.fixture(scope="session")
def tiny_artifact(tiny_bert: Path, export_tiny: Callable[..., Path]) -> Path:
    from bertx.backends import Backend
    from bertx.exporter import Int8Options

    # On a tiny model OpenVINO's INT8 wins the clock; the tests of onnxruntime's INT8 graphs need those.
    onnxruntime_only = Int8Options(engines=(Backend.ONNXRUNTIME,))
    return export_tiny(tiny_bert, int8=True, fp16=True, int8_options=onnxruntime_only)


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged all-MiniLM-L6-v2 exported with fp32, int8 and fp16, and bf16 where the CPU computes
    it (the real model, for truth).

    INT8 is one fixed onnxruntime recipe, not the search: the search is tested on tiny models, and on
    MiniLM it costs about a minute more than the whole rest of this export. Its gate is set explicitly:
    split-dynamic measured min cosine 0.988 on AVX-512 VNNI, and 0.985 with the 7-bit weights it takes on
    CPUs without VNNI (built on a VNNI CPU, whose kernels then compute what AVX2's do without saturating).
    """
    from bertx.cpu import cpu_info
    from bertx.exporter import ExportOptions, Int8Options, export_model
    from bertx.manifest import Precision, Thresholds

    out = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2"
    options = ExportOptions(
        model=MINILM_ID,
        output=out,
        int8=True,
        int8_options=Int8Options(recipe="split-dynamic", allow_below_target=True),
        thresholds={Precision.INT8: Thresholds(max_abs=None, min_cosine=MINILM_INT8_MIN_COSINE)},
        fp16=True,
        bf16=cpu_info().bf16,
    )
    return export_model(options, quiet_mode=True).path


@pytest.fixture(scope="session")
def minilm_source() -> Path:
    from bertx.exporter.resolve import resolve_model

    return resolve_model(MINILM_ID, allow_download=False).path
