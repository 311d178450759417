"""Which variant to load on the exporting CPU: the fastest of fp32, INT8 and bf16 that met the target.

Each variant built for the CPU is timed on the export's speed sample (the INT8 search's), the variants
taking their rounds in turn; a variant qualifies when its parity report (batched and one text
at a time) reaches the target cosine. fp16 is for GPUs and is not timed here.
"""

from __future__ import annotations

from collections.abc import Sequence

from bertx.backends import GraphFile
from bertx.cpu import CpuInfo
from bertx.manifest import ParityReport, Precision, Recommendation
from bertx.tokenization import Batch, TextEncoder

from .int8 import fit_speed_sample, side_by_side, speed_sample

ROUNDS = 3


def cpu_variants(graphs: dict[Precision, GraphFile]) -> dict[Precision, GraphFile]:
    """The variants the recommendation times: all but fp16, which is for GPUs."""
    return {p: g for p, g in graphs.items() if p is not Precision.FP16}


def qualifies(report: ParityReport | None, target: float) -> bool:
    """Whether a variant's proof reached `target`, batched and alone."""
    if report is None or not report.passed:
        return False
    single = report.cosine_min if report.cosine_min_single is None else report.cosine_min_single
    return min(report.cosine_min, single) >= target


def recommend(
    graphs: dict[Precision, GraphFile],
    reports: dict[Precision, ParityReport],
    encoder: TextEncoder,
    input_names: Sequence[str],
    output: str,
    cpu: CpuInfo,
    target: float,
    sample: Sequence[Batch] = (),
) -> Recommendation:
    """Time the CPU variants side by side and recommend the fastest that qualifies (fp32 always does; an
    artifact with no other CPU variant is not timed). `sample`: the speed sample the INT8 search fitted, if
    it ran (the same texts, fitted the same way), else it is fitted here."""
    timed = cpu_variants(graphs)
    speeds = {Precision.FP32: 0.0}
    if len(timed) > 1:
        fp32 = timed.get(Precision.FP32, next(iter(timed.values())))
        sample = sample or fit_speed_sample(speed_sample(encoder), fp32, input_names, output)
        speeds = dict(zip(timed, side_by_side(list(timed.values()), sample, input_names, output, ROUNDS)))
    passing = [p for p in timed if p is Precision.FP32 or qualifies(reports.get(p), target)]
    ranking = tuple(sorted(passing, key=lambda p: -speeds[p]))
    best = ranking[0]
    others = ", ".join(f"{p.value} {speeds[p]:.1f}" for p in timed if p is not best)
    reason = (
        f"fastest variant at min cosine ≥ {target} on this {cpu.cpu_class} CPU: {best.value} {speeds[best]:.1f} "
        f"texts/s ({others})"
        if others
        else "the only variant this CPU runs"
    )
    return Recommendation(
        variant=best,
        target_cosine=target,
        cpu=cpu.model,
        cpu_class=cpu.cpu_class,
        texts_per_s={p.value: round(speeds[p], 1) for p in speeds if speeds[p]},
        ranking=ranking,
        reason=reason,
    )
