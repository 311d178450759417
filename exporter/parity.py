"""The parity gate: every variant against PyTorch fp32 on real, varied text.

Both sides get exactly the same token ids (from the artifact's own tokenizer, as the runtime builds
them), in the runtime's own batches (see `proof`). Errors are measured over real tokens only; padded
positions are free to differ. Each variant's sentence vectors are also computed one text at a time,
and a text's batched and lone vectors compared, so a variant whose vectors depend on their batch-mates
or on the order of batch shapes fails here, not in a user's process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bertx.backends import GraphFile, open_graph
from bertx.errors import ExportError
from bertx.manifest import (
    Defaults,
    Head,
    HeadKind,
    HeadParity,
    LayerError,
    ParityReport,
    PooledParity,
    Precision,
    SentenceEmbeddingOutput,
    Thresholds,
)
from bertx.pooling import cosine_rows, l2_normalize, pool

from .proof import ProofMeasure, ProofSet, builtin_texts, in_text_order, invariance_limit
from .proof import pooled as pooled_batches

DEFAULT_THRESHOLDS: dict[Precision, Thresholds] = {
    Precision.FP32: Thresholds(max_abs=1e-4, min_cosine=0.99999),
    Precision.FP16: Thresholds(max_abs=None, min_cosine=0.999),
    Precision.INT8: Thresholds(max_abs=None, min_cosine=0.98),
    Precision.BF16: Thresholds(max_abs=None, min_cosine=0.999),
}


def parse_thresholds(min_cosine: Sequence[str], max_abs: float | None) -> dict[Precision, Thresholds]:
    """Thresholds from `--min-cosine VARIANT=X` (repeatable) and `--max-abs X` (fp32), over the defaults.

    Raises:
        ExportError: a malformed override; the message shows the expected form.
    """
    limits = dict(DEFAULT_THRESHOLDS)
    for item in min_cosine:
        name, sep, value = item.partition("=")
        try:
            precision, number = Precision(name.strip()), float(value)
        except ValueError:
            names = ", ".join(p.value for p in Precision)
            raise ExportError(f"--min-cosine expects VARIANT=X with VARIANT one of {names}, got {item!r}") from None
        if not sep or not -1.0 <= number <= 1.0:
            raise ExportError(f"--min-cosine expects VARIANT=X with X between -1 and 1, got {item!r}")
        limits[precision] = replace(limits[precision], min_cosine=number)
    if max_abs is not None:
        if max_abs < 0:
            raise ExportError(f"--max-abs must be positive, got {max_abs}")
        limits[Precision.FP32] = replace(limits[Precision.FP32], max_abs=max_abs)
    return limits


def parity_texts() -> list[str]:
    """The built-in real sentences: short and long, punctuation, digits, accents, CJK, emoji."""
    return builtin_texts("parity_sentences.txt")


@dataclass
class _Tally:
    """Running statistics of one variant over the batches."""

    layer_max: np.ndarray
    vectors: list[np.ndarray] = field(default_factory=list)  # pooled last layer per batch
    nonfinite: bool = False
    head_max: float = 0.0
    head_agree: int = 0
    head_items: int = 0
    pooled_max: float | None = None
    pooled_cosines: list[np.ndarray] = field(default_factory=list)


def check_parity(
    source_path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    variants: dict[Precision, GraphFile],
    defaults: Defaults,
    thresholds: dict[Precision, Thresholds],
    proof: ProofSet,
    head: Head | None = None,
    pooled: SentenceEmbeddingOutput | None = None,
) -> dict[Precision, ParityReport]:
    """Run each variant's graph (with the engine it is made for) and PyTorch fp32 on `proof` and compare:
    every hidden state in the runtime's batches, the pooled sentence vectors batched and one text at a time.

    With a task head, its logits are compared too: the largest difference (over real tokens for a
    tagger) and how often the best label agrees. fp32 logits must meet the fp32 `max_abs` limit. So must an in-graph
    `sentence_embedding` (`pooled`), compared with PyTorch's last layer pooled the same way; its min
    cosine must meet the variant's.

    Returns one report per variant; `report.passed` tells whether it met its thresholds.
    """
    import torch
    import transformers

    auto = {
        None: transformers.AutoModel,
        HeadKind.SEQUENCE_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
        HeadKind.TOKEN_CLASSIFICATION: transformers.AutoModelForTokenClassification,
    }[None if head is None else head.kind]
    model = auto.from_pretrained(source_path, output_hidden_states=True).eval()
    wanted = list(output_names) if head is None else [*output_names, head.output]
    in_graph = {p for p, graph in variants.items() if pooled is not None and graph.path.name in pooled.files}
    sessions = {p: open_graph(graph) for p, graph in variants.items()}
    tallies = {p: _Tally(layer_max=np.zeros(len(output_names))) for p in variants}
    references = []
    for batch in proof.batches:
        feeds = batch.feeds(input_names)
        with torch.inference_mode():
            result = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        expected = [h.numpy() for h in result.hidden_states]
        if getattr(result, "last_hidden_state", None) is not None:  # after a final norm, where a type has one
            expected[-1] = result.last_hidden_state.numpy()
        real = batch.mask.astype(bool)
        expected_pooled = pool(expected[-1], batch.mask, defaults.pooling)
        references.append(expected_pooled)
        for precision, session in sessions.items():
            extra = [pooled.output] if pooled is not None and precision in in_graph else []
            got = session.run(wanted + extra, feeds)
            tally = tallies[precision]
            if pooled is not None and extra:
                reference = l2_normalize(expected_pooled) if pooled.normalize else expected_pooled
                _tally_pooled(tally, got.pop(), reference)
            if head is not None:
                _tally_head(tally, got.pop(), result.logits.numpy(), real, head.kind)
            for i, (ours, theirs) in enumerate(zip(got, expected)):
                tally.nonfinite |= not bool(np.isfinite(ours[real]).all())
                tally.layer_max[i] = max(tally.layer_max[i], float(np.abs(ours[real] - theirs[real]).max()))
            tally.vectors.append(pool(got[-1], batch.mask, defaults.pooling))
    reference_vectors = in_text_order(proof, references)
    measures = {}
    for precision, session in sessions.items():
        batched = in_text_order(proof, tallies[precision].vectors)
        alone = np.concatenate(pooled_batches(session, proof.singles, input_names, output_names[-1], defaults.pooling))
        measured = ProofMeasure.compare(batched, alone, reference_vectors)
        measures[precision] = replace(measured, nonfinite=measured.nonfinite or tallies[precision].nonfinite)
    return {
        precision: _report(
            tally, measures[precision], output_names, thresholds[precision], defaults, proof, head, pooled
        )
        for precision, tally in tallies.items()
    }


def _tally_pooled(tally: _Tally, ours: np.ndarray, reference: np.ndarray) -> None:
    tally.nonfinite |= not bool(np.isfinite(ours).all())
    tally.pooled_max = max(tally.pooled_max or 0.0, float(np.abs(ours - reference).max(initial=0.0)))
    tally.pooled_cosines.append(cosine_rows(ours, reference))


def _tally_head(tally: _Tally, ours: np.ndarray, theirs: np.ndarray, real: np.ndarray, kind: HeadKind) -> None:
    """Add one batch's logits to the head statistics; a tagger's padded positions are left out."""
    if kind is HeadKind.TOKEN_CLASSIFICATION:
        ours, theirs = ours[real], theirs[real]
    tally.nonfinite |= not bool(np.isfinite(ours).all())
    tally.head_max = max(tally.head_max, float(np.abs(ours - theirs).max(initial=0.0)))
    tally.head_agree += int((ours.argmax(axis=-1) == theirs.argmax(axis=-1)).sum())
    tally.head_items += len(ours)


def _report(
    tally: _Tally,
    measured: ProofMeasure,
    names: Sequence[str],
    limits: Thresholds,
    defaults: Defaults,
    proof: ProofSet,
    head: Head | None,
    pooled: SentenceEmbeddingOutput | None = None,
) -> ParityReport:
    layers = tuple(LayerError(name, float(err)) for name, err in zip(names, tally.layer_max))
    cosine_min = float(np.nan_to_num(measured.batched.min(), nan=-1.0))
    single_min = float(np.nan_to_num(measured.single.min(), nan=-1.0))
    invariance_min = measured.invariance_min
    head_parity = None
    if head is not None:
        agreement = tally.head_agree / max(tally.head_items, 1)
        head_parity = HeadParity(head.output, tally.head_max, agreement, tally.head_items)
    errors = [layer.max_abs for layer in layers] + ([] if head_parity is None else [head_parity.max_abs])
    pooled_parity = None
    if pooled is not None and tally.pooled_max is not None:
        in_graph_min = float(np.nan_to_num(np.concatenate(tally.pooled_cosines).min(), nan=-1.0))
        pooled_parity = PooledParity(pooled.output, tally.pooled_max, in_graph_min)
        errors.append(pooled_parity.max_abs)
    passed = (
        not measured.nonfinite
        and cosine_min >= limits.min_cosine
        and single_min >= limits.min_cosine
        and invariance_min >= invariance_limit(limits.min_cosine)
        and (pooled_parity is None or pooled_parity.cosine_min >= limits.min_cosine)
        and (limits.max_abs is None or all(error <= limits.max_abs for error in errors))
    )
    return ParityReport(
        passed=passed,
        thresholds=limits,
        texts=proof.texts,
        tokens=proof.tokens,
        pooling=defaults.pooling,
        normalize=defaults.normalize,
        layers=layers,
        cosine_min=cosine_min,
        cosine_mean=float(np.nan_to_num(measured.batched.mean(), nan=-1.0)),
        nonfinite=measured.nonfinite,
        head=head_parity,
        sentence_embedding=pooled_parity,
        cosine_min_single=single_min,
        batch_invariance_min=invariance_min,
        batches=f"runtime batches (longest first, {len(proof.batches)} batches) and each text alone",
    )
