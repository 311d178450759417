"""Trace a transformers encoder to ONNX through Optimum, with every hidden state as an output."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertx.architectures import supported_type
from bertx.errors import ExportError, UnsupportedModelError
from bertx.manifest import Architecture, Defaults, Head, HeadKind, Pooling, ProblemType
from bertx.prompts import Prompts

from .resolve import ResolvedModel

DYNAMIC_AXES = {0: "batch_size", 1: "sequence_length"}
# Types Optimum has no ONNX config for whose inputs are BERT's (input_ids, attention_mask, token_type_ids).
BERT_LIKE = ("ernie",)
# Types whose `last_hidden_state` is the last layer's output after a final norm, so the hidden state pooling
# reads (hidden_states.L) is exported from `last_hidden_state`, not from the last layer's raw output.
FINAL_NORM = ("modernbert",)
HEAD_OUTPUT = "logits"
# The class-name endings of the fine-tuned checkpoints whose head is exported, and Optimum's task for each.
HEAD_CLASSES = {
    "ForSequenceClassification": (HeadKind.SEQUENCE_CLASSIFICATION, "text-classification"),
    "ForTokenClassification": (HeadKind.TOKEN_CLASSIFICATION, "token-classification"),
}


@dataclass(frozen=True)
class ModelFacts:
    """What the manifest needs to know about the source model, read once from its config."""

    architecture: Architecture
    defaults: Defaults
    max_length_limit: int
    head: Head | None = None
    prompts: Prompts = field(default_factory=Prompts)

    @property
    def task(self) -> str:
        """Optimum's task name for the export: the head's, or bare feature extraction."""
        if self.head is None:
            return "feature-extraction"
        return next(task for kind, task in HEAD_CLASSES.values() if kind is self.head.kind)


def read_model_facts(source: ResolvedModel, max_length: int | None) -> ModelFacts:
    """Read the architecture, the default pooling and the max length from the model folder.

    Raises:
        UnsupportedModelError: the model type is not one bertx exports yet.
    """
    config = load_config(source.path)
    model_type = str(config.model_type)
    kind = supported_type(model_type)
    positions = int(config.max_position_embeddings)
    limit = kind.max_length(positions, getattr(config, "pad_token_id", None))
    architecture = Architecture(
        model_type=model_type,
        num_layers=int(_first(config, "num_hidden_layers", "n_layers")),
        hidden_size=int(_first(config, "hidden_size", "dim")),
        num_heads=int(_first(config, "num_attention_heads", "n_heads")),
        max_position_embeddings=positions,
        type_vocab_size=int(getattr(config, "type_vocab_size", 0) or 0),
        vocab_size=int(config.vocab_size),
    )
    defaults = _sentence_transformers_defaults(source.path, limit)
    if max_length is not None:
        if not 2 <= max_length <= limit:
            raise ExportError(f"--max-length must be between 2 and {limit} for this model, got {max_length}")
        defaults = Defaults(defaults.pooling, defaults.normalize, max_length, "--max-length")
    head = _head(config)
    if head is not None and model_type in FINAL_NORM:
        raise UnsupportedModelError(
            f"a {model_type} checkpoint with a task head is not supported yet: its hidden states do not carry the "
            "final norm its head reads; export the bare encoder"
        )
    return ModelFacts(architecture, defaults, limit, head, _sentence_transformers_prompts(source.path))


def _head(config: Any) -> Head | None:
    """The task head of a fine-tuned checkpoint (from `architectures` in its config), or None for a bare
    encoder. Heads bertx cannot export yet (question answering, masked LM, …) are dropped with the
    encoder kept, as `AutoModel` does."""
    names = [str(name) for name in (getattr(config, "architectures", None) or [])]
    for name in names:
        for ending, (kind, _) in HEAD_CLASSES.items():
            if name.endswith(ending):
                count = int(config.num_labels)
                id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
                labels = tuple(id2label.get(i, f"LABEL_{i}") for i in range(count))
                problem = getattr(config, "problem_type", None)
                if problem is None:
                    # transformers decides at training time; a single output is a score, as in its own loss.
                    problem = "regression" if count == 1 and kind is HeadKind.SEQUENCE_CLASSIFICATION else None
                return Head(kind, HEAD_OUTPUT, labels, ProblemType(problem or ProblemType.SINGLE_LABEL.value))
    return None


def export_onnx(source: ResolvedModel, facts: ModelFacts, out_dir: Path, opset: int | None) -> Path:
    """Export the model with outputs `hidden_states.0` … `hidden_states.L` into `out_dir/model.onnx`;
    a fine-tuned checkpoint's head adds `logits` (first, as the model returns it).

    Returns the path of the ONNX file. Optimum's own validation on random inputs is skipped: bertx's
    parity gate checks every variant on real text afterwards.
    """
    from optimum.exporters.onnx import main_export
    from optimum.exporters.tasks import TasksManager

    config = load_config(source.path)
    if config.model_type in BERT_LIKE:
        from optimum.exporters.onnx.model_configs import BertOnnxConfig

        base_class: type = BertOnnxConfig
    else:
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model_type=config.model_type, task=facts.task, library_name="transformers"
        )
        base_class = type(constructor(config))
    names = output_names(facts)
    head = facts.head
    final_norm = config.model_type in FINAL_NORM
    if final_norm:  # in the order the model returns them; renamed after the export
        names = ["last_hidden_state", *names]

    class HiddenStatesOnnxConfig(base_class):  # type: ignore[misc, valid-type]
        """The model's own OnnxConfig with every hidden state as an output instead of the last only."""

        @property
        def outputs(self) -> dict[str, dict[int, str]]:
            axes = {name: dict(DYNAMIC_AXES) for name in names}
            if head is not None and head.kind is HeadKind.SEQUENCE_CLASSIFICATION:
                axes[head.output] = {0: "batch_size"}
            return axes

    onnx_config = HiddenStatesOnnxConfig(config, task=facts.task)
    try:
        with quiet():
            main_export(
                str(source.path),
                output=out_dir,
                task=facts.task,
                opset=opset,
                library_name="transformers",
                model_kwargs={"output_hidden_states": True},
                custom_onnx_configs={"model": onnx_config},
                do_validation=False,
                local_files_only=True,
            )
    except Exception as exc:  # torch.onnx and Optimum raise many types; say which step failed
        raise ExportError(f"ONNX export through Optimum failed: {exc}") from exc
    path = out_dir / "model.onnx"
    if not path.is_file():
        raise ExportError(f"Optimum finished without writing {path}")
    if final_norm:
        _last_state_after_final_norm(path, names[-1])
    return path


def _last_state_after_final_norm(path: Path, last: str) -> None:
    """Make the graph's `last` output (hidden_states.L) the model's `last_hidden_state`, after its final norm;
    the last layer's raw output stays inside the graph, where that norm reads it."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    kept = [output for output in graph.output if output.name != last]
    del graph.output[:]
    graph.output.extend(kept)
    renames = {last: f"{last}.before_final_norm", "last_hidden_state": last}
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name in renames:
                    names[i] = renames[name]
    for output in graph.output:
        if output.name == "last_hidden_state":
            output.name = last
    order = sorted(graph.output, key=lambda output: int(output.name.rsplit(".", 1)[1]))
    del graph.output[:]
    graph.output.extend(order)
    onnx.save(model, str(path))


def output_names(facts: ModelFacts) -> list[str]:
    """The graph's outputs in the order the model returns them: the head's logits, then every hidden state."""
    states = [f"hidden_states.{i}" for i in range(facts.architecture.num_layers + 1)]
    return states if facts.head is None else [facts.head.output, *states]


def load_config(folder: Path) -> Any:
    """The transformers config of a model folder; an unreadable or unknown one is unsupported."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise UnsupportedModelError(f"cannot read the model config in {folder}: {exc}") from exc


def onnx_io_names(path: Path) -> tuple[list[str], list[str]]:
    """Input and output names of an ONNX file, in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [i.name for i in graph.input], [o.name for o in graph.output]


def _first(config: Any, *names: str) -> Any:
    for name in names:
        if hasattr(config, name):
            return getattr(config, name)
    raise UnsupportedModelError(f"model config has none of {', '.join(names)}")


def _sentence_transformers_defaults(folder: Path, limit: int) -> Defaults:
    """Pooling, normalization and max length from a sentence-transformers folder, else plain defaults."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return Defaults(Pooling.MEAN, False, limit, "bertx default")
    modules = _read_json(modules_file)
    pooling_config = _pooling_config(folder)
    pooling = Pooling.MEAN if pooling_config is None else _pooling_mode(pooling_config)
    normalize = any(str(module.get("type", "")).endswith("Normalize") for module in modules)
    max_len = limit
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        value = _read_json(st_config).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            max_len = min(value, limit)
    return Defaults(pooling, normalize, max_len, "sentence-transformers config")


def _sentence_transformers_prompts(folder: Path) -> Prompts:
    """The prompts a sentence-transformers folder declares (config_sentence_transformers.json), and whether
    its Pooling module counts their tokens."""
    config_file = folder / "config_sentence_transformers.json"
    if not config_file.is_file():
        return Prompts()
    config = _read_json(config_file)
    named = config.get("prompts") or {}
    default = config.get("default_prompt_name")
    if not isinstance(named, dict) or not all(isinstance(v, str) for v in named.values()):
        raise UnsupportedModelError(f"{config_file}: prompts must map names to texts, got {named!r}")
    pooling_config = _pooling_config(folder)
    include = True if pooling_config is None else bool(_read_json(pooling_config).get("include_prompt", True))
    try:
        return Prompts(named, default, include, "sentence-transformers config")
    except ValueError as exc:
        raise UnsupportedModelError(f"{config_file}: {exc}") from exc


def with_prompts(found: Prompts, added: tuple[tuple[str, str], ...], default_name: str | None) -> Prompts:
    """The folder's prompts with those given to the export command added (a name given again replaces the
    folder's text) and its default prompt replaced when one is named.

    Raises:
        ExportError: the default names no prompt.
    """
    if not added and default_name is None:
        return found
    named = {**found.named, **dict(added)}
    default = found.default_name if default_name is None else default_name or None
    if default is not None and default not in named:
        listed = ", ".join(named) or "none"
        raise ExportError(f"--default-prompt-name {default!r} names no prompt (the prompts are: {listed})")
    return Prompts(
        named,
        default,
        found.include_prompt,
        "export command" if not found.named else found.origin + " + export command",
    )


def _pooling_config(folder: Path) -> Path | None:
    """The config file of a sentence-transformers folder's Pooling module, if it has one."""
    modules_file = folder / "modules.json"
    for module in _read_json(modules_file) if modules_file.is_file() else []:
        config = folder / str(module.get("path", "")) / "config.json"
        if str(module.get("type", "")).endswith("Pooling") and config.is_file():
            return config
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedModelError(f"cannot read {path}: {exc}") from exc


def _pooling_mode(config_file: Path) -> Pooling:
    config = _read_json(config_file)
    modes = {
        "pooling_mode_cls_token": Pooling.CLS,
        "pooling_mode_mean_tokens": Pooling.MEAN,
        "pooling_mode_max_tokens": Pooling.MAX,
        "pooling_mode_mean_sqrt_len_tokens": Pooling.MEAN_SQRT_LEN,
    }
    named = config.get("pooling_mode")  # sentence-transformers 5 writes the mode by name
    if isinstance(named, str):
        named = [named]
    if isinstance(named, list):
        names = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens"}
        config = {f"pooling_mode_{names.get(str(mode), str(mode))}": True for mode in named}
    enabled = sorted(key for key, on in config.items() if key.startswith("pooling_mode_") and on)
    if len(enabled) != 1 or enabled[0] not in modes:
        # sentence-transformers concatenates several modes, and has weighted-mean and last-token ones:
        # a single bertx default could not reproduce its embeddings.
        raise UnsupportedModelError(
            f"{config_file} asks for pooling {', '.join(enabled) or 'none'}; bertx supports exactly one of "
            "cls, mean, max, mean_sqrt_len as a sentence-transformers default"
        )
    return modes[enabled[0]]


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the tracer warnings and info logs transformers, Optimum and onnxruntime print."""
    # ORT's quantization tools log to the root logger.
    names = ("transformers", "optimum", "torch.onnx", "onnxruntime", None)
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
