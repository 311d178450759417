"""Every supported model type exported and checked against PyTorch on a tiny random model with a real
tokenizer of its kind (WordPiece, SentencePiece-style Unigram); unsupported types refused with the reason."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bertx
from bertx.architectures import NOT_YET, SUPPORTED
from bertx.errors import UnsupportedModelError

from conftest import WORDS, run_cli
from reference import MIXED_TEXTS, torch_hidden_states

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-éü")
SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # pad, unk, cls, sep, mask
ROBERTA_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
NEW_TYPES = [
    *("xlm-roberta", "camembert", "mpnet", "electra", "albert", "deberta-v2", "modernbert"),
    *("roformer", "mobilebert", "convbert", "ernie"),  # unfused: ONNX Runtime's optimizer does not know them
]
LONG = " ".join(WORDS * 6)  # past every tiny model's 128 positions


def _fast_tokenizer(kind: str, specials: tuple[str, ...], pair_types: bool, inputs: list[str]) -> Any:
    """A tokenizers-library tokenizer of `kind` (wordpiece or unigram) wrapped for transformers; `specials`
    are pad, unk, cls, sep, mask and take the first ids in the order the model's config expects."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    pad, unk, cls, sep, mask = specials
    if kind == "wordpiece":
        order = [pad, unk, cls, sep, mask] if pad == "[PAD]" else [cls, pad, sep, unk, mask]
        vocab = list(dict.fromkeys(order + CHARS + [f"##{c}" for c in CHARS] + WORDS))
        tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token=unk))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
    elif kind == "bpe":  # byte-level BPE, as ModernBERT's (OLMo's) tokenizer
        order = [pad, unk, cls, sep, mask]
        tokenizer = Tokenizer(models.BPE(unk_token=unk))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=order, initial_alphabet=alphabet)
        tokenizer.train_from_iterator([" ".join(WORDS), " ".join(CHARS)] * 20, trainer)
    else:
        order = [cls, pad, sep, unk, mask] if cls == "<s>" else [pad, unk, cls, sep, mask]
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=order, unk_token=unk, initial_alphabet=CHARS)
        tokenizer.train_from_iterator([" ".join(WORDS), " ".join(CHARS)] * 20, trainer)
    second = f"$B:1 {sep}:1" if pair_types else f"{sep} $B {sep}"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {second}",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=pad,
        unk_token=unk,
        cls_token=cls,
        sep_token=sep,
        mask_token=mask,
        bos_token=cls,
        eos_token=sep,
        model_input_names=inputs,
    )


def make_model(model_type: str, folder: Path) -> Path:
    """A random-weight `model_type` encoder with a tokenizer of the kind its real checkpoints use."""
    import torch
    import transformers as t

    with_types = ["input_ids", "token_type_ids", "attention_mask"]
    without = ["input_ids", "attention_mask"]
    builders: dict[str, Callable[[int], Any]] = {}
    if model_type in ("xlm-roberta", "camembert"):
        tokenizer = _fast_tokenizer("unigram", ROBERTA_SPECIALS, False, without)
        config_class = t.XLMRobertaConfig if model_type == "xlm-roberta" else t.CamembertConfig
        roberta_ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
        builders[model_type] = lambda n: config_class(
            vocab_size=n, max_position_embeddings=130, type_vocab_size=1, **roberta_ids, **SHAPE
        )
    elif model_type == "mpnet":
        tokenizer = _fast_tokenizer("wordpiece", ("<pad>", "[UNK]", "<s>", "</s>", "<mask>"), False, without)
        builders[model_type] = lambda n: t.MPNetConfig(
            vocab_size=n, max_position_embeddings=130, pad_token_id=1, bos_token_id=0, eos_token_id=2, **SHAPE
        )
    elif model_type == "albert":
        tokenizer = _fast_tokenizer("unigram", ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"), True, with_types)
        builders[model_type] = lambda n: t.AlbertConfig(
            vocab_size=n, embedding_size=16, max_position_embeddings=128, pad_token_id=0, **SHAPE
        )
    elif model_type == "deberta-v2":
        tokenizer = _fast_tokenizer("unigram", BERT_SPECIALS, True, without)
        builders[model_type] = lambda n: t.DebertaV2Config(  # as deberta-v3: relative positions only
            vocab_size=n,
            max_position_embeddings=128,
            type_vocab_size=0,
            pad_token_id=0,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            max_relative_positions=-1,
            position_buckets=16,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            **SHAPE,
        )
    elif model_type == "modernbert":
        tokenizer = _fast_tokenizer("bpe", BERT_SPECIALS, False, without)
        builders[model_type] = lambda n: t.ModernBertConfig(
            vocab_size=n,
            max_position_embeddings=128,
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=2,
            eos_token_id=3,
            global_attn_every_n_layers=2,  # layer 0 global, layer 1 local
            local_attention=16,  # a window much shorter than the texts
            reference_compile=False,
            **SHAPE,
        )
    elif model_type == "roformer":
        tokenizer = _fast_tokenizer("wordpiece", BERT_SPECIALS, True, with_types)
        builders[model_type] = lambda n: t.RoFormerConfig(
            vocab_size=n, embedding_size=32, max_position_embeddings=128, pad_token_id=0, **SHAPE
        )
    elif model_type == "mobilebert":
        tokenizer = _fast_tokenizer("wordpiece", BERT_SPECIALS, True, with_types)
        builders[model_type] = lambda n: t.MobileBertConfig(
            vocab_size=n,
            embedding_size=16,
            intra_bottleneck_size=16,
            true_hidden_size=16,
            num_feedforward_networks=2,
            max_position_embeddings=128,
            pad_token_id=0,
            **SHAPE,
        )
    elif model_type == "convbert":
        tokenizer = _fast_tokenizer("wordpiece", BERT_SPECIALS, True, with_types)
        builders[model_type] = lambda n: t.ConvBertConfig(
            vocab_size=n, embedding_size=32, max_position_embeddings=128, pad_token_id=0, conv_kernel_size=9, **SHAPE
        )
    elif model_type == "ernie":
        tokenizer = _fast_tokenizer("wordpiece", BERT_SPECIALS, True, with_types)
        builders[model_type] = lambda n: t.ErnieConfig(
            vocab_size=n, max_position_embeddings=128, pad_token_id=0, use_task_id=True, task_type_vocab_size=3, **SHAPE
        )
    elif model_type == "electra":
        tokenizer = _fast_tokenizer("wordpiece", BERT_SPECIALS, True, with_types)
        builders[model_type] = lambda n: t.ElectraConfig(
            vocab_size=n, embedding_size=32, max_position_embeddings=128, pad_token_id=0, **SHAPE
        )
    else:
        raise ValueError(model_type)
    config = builders[model_type](len(tokenizer))
    assert tokenizer.pad_token_id == config.pad_token_id
    torch.manual_seed(0)
    t.AutoModel.from_config(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=NEW_TYPES)
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, export_tiny: Callable[..., Path]
) -> tuple[str, Path, Path]:
    model_type = str(request.param)
    source = make_model(model_type, tmp_path_factory.mktemp(model_type) / "model")
    return model_type, source, export_tiny(source, int8=True, int8_options=_dynamic_int8())


def _dynamic_int8() -> Any:
    from bertx.exporter import Int8Options

    return Int8Options(recipe="dynamic")


@pytest.mark.slow
def test_each_supported_type_exports_with_every_hidden_state_and_matches_pytorch(
    exported: tuple[str, Path, Path],
) -> None:
    model_type, source, artifact = exported
    manifest = bertx.Manifest.load(artifact)
    kind = SUPPORTED[model_type]
    assert manifest.architecture.model_type == model_type and len(manifest.outputs) == 3
    config = json.loads((source / "config.json").read_text())
    limit = kind.max_length(config["max_position_embeddings"], config.get("pad_token_id"))
    assert manifest.defaults.max_seq_length == limit == 128
    assert all(v.parity is not None and v.parity.passed for v in manifest.variants.values())
    fp32 = manifest.variants[bertx.Precision.FP32].optimization
    assert (fp32["level"] == "unfused") == (kind.unfused is not None), fp32

    model = bertx.Model.from_pretrained(artifact)
    texts = [*MIXED_TEXTS, LONG]  # the long text runs at exactly the position limit
    with pytest.warns(bertx.TruncationWarning):
        ours = model.hidden_states(texts)
    theirs = torch_hidden_states(source, texts, limit)
    assert ours[-1].shape[1] == limit
    for mine, reference in zip(ours, theirs):
        assert np.abs(mine - np.stack(reference)).max() < 1e-4

    int8 = bertx.Model.from_pretrained(artifact, variant="int8").encode(MIXED_TEXTS, normalize_embeddings=True)
    fp32 = model.encode(MIXED_TEXTS, normalize_embeddings=True)
    assert (int8 * fp32).sum(axis=1).min() > 0.99


@pytest.mark.slow
def test_pairs_use_segment_ids_where_the_type_has_them(exported: tuple[str, Path, Path]) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    _, source, artifact = exported
    pair = ("The river bank flooded.", "A man is eating food in the park.")
    tokenizer = AutoTokenizer.from_pretrained(source)
    inputs = tokenizer(*pair, return_tensors="pt")
    with torch.inference_mode():
        want = AutoModel.from_pretrained(source).eval()(**inputs).last_hidden_state[0].mean(dim=0).numpy()
    model = bertx.Model.from_pretrained(artifact)
    got = model.encode([pair], pooling="mean", normalize_embeddings=False)[0]
    assert np.abs(got - want).max() < 1e-4
    assert ("token_type_ids" in model.manifest.inputs) == ("token_type_ids" in inputs)


@pytest.mark.parametrize("model_type", sorted(NOT_YET))
def test_unsupported_types_are_refused_with_the_reason(model_type: str, tmp_path: Path) -> None:
    from transformers import AutoConfig

    from bertx.exporter.onnx_export import read_model_facts
    from bertx.exporter.resolve import ResolvedModel

    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    try:
        AutoConfig.from_pretrained(tmp_path)
    except (ValueError, KeyError):
        pytest.skip(f"transformers here does not know {model_type}")
    reason = NOT_YET[model_type]
    with pytest.raises(UnsupportedModelError, match=re.escape(f"'{model_type}' is not supported yet: {reason}")):
        read_model_facts(ResolvedModel(str(tmp_path), tmp_path, "local folder"), None)


def test_the_export_command_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "longformer"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    result = run_cli("export", str(tmp_path), "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'longformer' is not supported yet" in result.stderr and "xlm-roberta" in result.stderr


def test_info_lists_the_supported_types() -> None:
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    for model_type in SUPPORTED:
        assert model_type in result.stdout
    assert "longformer" in result.stdout and "Not supported yet" in result.stdout
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "unfused" in rows["convbert"] and "unfused" not in rows["bert"]


@pytest.mark.slow
def test_the_int8_search_goes_on_when_one_recipe_cannot_be_built(
    tmp_path: Path, export_tiny: Callable[..., Path]
) -> None:
    # On this tiny ALBERT (weights shared across layers), static calibration histograms have no finite range:
    # those recipes fail to build, and the search chooses among the others instead of stopping.
    from bertx.backends import Backend
    from bertx.exporter import Int8Options

    source = make_model("albert", tmp_path / "albert")
    artifact = export_tiny(source, int8=True, int8_options=Int8Options(engines=(Backend.ONNXRUNTIME,)))
    quantization = bertx.Manifest.load(artifact).variant("int8").quantization
    assert quantization is not None and quantization["mode"] == "auto"
    measured = {c["recipe"] for c in quantization["candidates"]}
    for recipe, why in quantization["failed_recipes"].items():
        assert recipe not in measured and recipe in why


@pytest.mark.slow
def test_modernbert_equals_sentence_transformers_and_passes_every_gate(
    tmp_path: Path, export_tiny: Callable[..., Path]
) -> None:
    """A tiny ModernBERT saved as a sentence-transformers folder: bertx's vectors equal sentence-transformers'
    own pooling on it, at full length too, and INT8 (searched), fp16 and bf16 (where the CPU computes it) pass
    the same parity gate as every other type."""
    from sentence_transformers import SentenceTransformer, models

    from bertx.cpu import cpu_info

    source = make_model("modernbert", tmp_path / "model")
    folder = tmp_path / "st"
    encoder = models.Transformer(str(source), max_seq_length=128)
    pooling = models.Pooling(encoder.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[encoder, pooling, models.Normalize()], device="cpu").save(str(folder))
    bf16 = cpu_info().bf16
    artifact = export_tiny(folder, int8=True, fp16=True, bf16=bf16)
    manifest = bertx.Manifest.load(artifact)
    assert manifest.defaults.pooling is bertx.Pooling.MEAN and manifest.defaults.normalize
    expected = {bertx.Precision.FP32, bertx.Precision.INT8, bertx.Precision.FP16}
    expected |= {bertx.Precision.BF16} if bf16 else set()
    assert set(manifest.variants) == expected
    assert all(v.parity is not None and v.parity.passed for v in manifest.variants.values())

    texts = [*MIXED_TEXTS, LONG]
    want = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    with pytest.warns(bertx.TruncationWarning):
        got = bertx.Model.from_pretrained(artifact).encode(texts)
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize(
    ("config", "pooling"),
    [
        ({"pooling_mode": "cls"}, "cls"),
        ({"pooling_mode": "max"}, "max"),
        ({"pooling_mode": "mean_sqrt_len_tokens"}, "mean_sqrt_len"),
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
        ({"pooling_mode": ["mean", "max"]}, None),
        ({"pooling_mode": "lasttoken"}, None),
    ],
)
def test_both_ways_sentence_transformers_writes_its_pooling(tmp_path: Path, config: dict, pooling: str | None) -> None:
    from bertx.exporter.onnx_export import _pooling_mode

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"word_embedding_dimension": 32, **config}))
    if pooling is None:
        with pytest.raises(UnsupportedModelError, match="supports exactly one of"):
            _pooling_mode(path)
    else:
        assert _pooling_mode(path).value == pooling
