"""Architecture presets with random weights, for speed work where the real weights are not at hand.

The tokenizer is the packaged all-MiniLM-L6-v2's, which is bert-base-uncased's vocabulary. Results on
these models say "random weights": accuracy is only measured against the same random model, so the INT8
variant is kept even below the accuracy target (the manifest still says whether it met it).
"""

from __future__ import annotations

from pathlib import Path

PRESETS: dict[str, dict[str, int]] = {
    "bert-base-uncased": {},
    "bert-large-uncased": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
    "minilm-l6": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
}


def preset_artifact(
    name: str, models_dir: Path, int8: bool = True, fp16: bool = True, int8_recipe: str = "auto"
) -> Path:
    """Build (once) a random-weight model of the preset's shape and export it; return the artifact.

    An artifact already built is reused when its INT8 variant came from `int8_recipe` (any recipe the
    search chose counts for "auto"); otherwise it is exported again."""
    from bertx.cpu import cpu_info
    from bertx.errors import OptionError
    from bertx.exporter import ExportOptions, Int8Options, export_model
    from bertx.exporter.resolve import resolve_model
    from bertx.manifest import Manifest, Precision

    if name not in PRESETS:
        raise OptionError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    source = models_dir / "sources" / f"{name}-random-weights"
    artifact = models_dir / f"{name}-random-weights"
    wants_bf16 = cpu_info().bf16
    if (artifact / "bertx.json").is_file() and _int8_matches(artifact, int8, int8_recipe):
        if not wants_bf16 or Precision.BF16 in Manifest.load(artifact).variants:
            return artifact
    if not (source / "config.json").is_file():
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        torch.manual_seed(0)
        BertModel(BertConfig(**PRESETS[name])).eval().save_pretrained(source)
        tokenizer_source = resolve_model("sentence-transformers/all-MiniLM-L6-v2", allow_download=False).path
        AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(source)
    int8_options = Int8Options(recipe=int8_recipe, allow_below_target=True)
    export_model(
        ExportOptions(
            model=str(source),
            output=artifact,
            int8=int8,
            fp16=fp16,
            bf16=wants_bf16,
            int8_options=int8_options,
            force=True,
        )
    )
    return artifact


def _int8_matches(artifact: Path, int8: bool, recipe: str) -> bool:
    from bertx.manifest import Manifest, Precision

    if not int8:
        return True
    variant = Manifest.load(artifact).variants.get(Precision.INT8)
    quantization = variant.quantization if variant is not None else None
    if quantization is None:
        return False
    if recipe == "auto":
        return bool(quantization.get("mode") == "auto")
    return bool(quantization.get("recipe") == recipe)
