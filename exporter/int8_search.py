"""`--int8 auto`: the fastest INT8 graph that meets the target, found by measuring as few as possible.

Each engine (onnxruntime, OpenVINO through NNCF) offers a chain of recipes from the fastest and least
accurate to the slowest and most accurate; the `mixed` ladders continue each chain by taking the most
sensitive nodes out of INT8 one more at a time. Two measured facts prune the search:

1. an engine's all-INT8 graph is its fastest: once another engine has a candidate that meets the target
   and runs faster than that (by more than the timing noise), nothing more of the slower engine is built;
2. along a chain accuracy grows and speed falls, so the first recipe that meets the target is that
   chain's choice: the ones after it are not built, and the ladders are searched by doubling then
   bisecting the number of accurate nodes instead of step by step.

Every candidate built is measured in full: the proof (batched as the runtime batches and one text at a
time, against PyTorch) and its speed; the candidates that meet the target are timed again side by side
before the fastest is kept. What was pruned, and why, goes into the manifest with the measured table.
One named recipe (`fixed`) is proven the same way but not timed here: there is nothing to choose between,
and the export's recommendation times it side by side with the other variants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bertx.backends import Backend, GraphFile
from bertx.cpu import CpuInfo
from bertx.errors import ExportError

from . import int8_openvino as ov_int8
from .int8 import (
    Candidate,
    Int8Context,
    Int8Options,
    alternating_throughput,
    proof_measure,
    throughput,
    typed_graph,
)
from .int8_recipes import NodeMethod, Recipe, build, mixed_recipe, named_recipe, node_methods, recipes_for
from .int8_sensitivity import rank_onnxruntime, rank_openvino
from .outliers import split_outlier_units
from .smoothing import smooth

MARGIN = 0.03  # speeds closer than this are within a 2-core machine's timing noise
_DUEL_ROUNDS = 3
_FASTEST = "dynamic-per-tensor"  # the onnxruntime chain's head: its fastest kernels


Entry = tuple[Candidate, GraphFile, dict[str, str]]  # a measured candidate, its graph and node methods


class Search:
    """The candidates built so far, with what each engine's search has learnt."""

    def __init__(self, context: Int8Context, cpu: CpuInfo, options: Int8Options, progress: Callable[[str], None]):
        import onnx

        self.context, self.cpu, self.options, self.progress = context, cpu, options, progress
        self.typed = typed_graph(context.fused, context.work_dir)
        self.base = onnx.load(str(self.typed))
        self.timed = options.recipe == "auto"  # a named recipe has nothing to be timed against
        self.fp32_speed = throughput(GraphFile(context.fused), context) if self.timed else 0.0
        self.candidates: list[Entry] = []
        self.failed: dict[str, str] = {}
        self.pruned: dict[str, str] = {}
        self.ranking: list[tuple[str, float]] = []  # onnxruntime: node, end-to-end loss when only it is INT8
        self.openvino_ranking: list[tuple[list[str], float]] = []  # MatMul group, loss gained by restoring it
        self._prepared: dict[tuple[float | None, int], tuple[Path, int, int]] = {}
        self._openvino_base: Any = None
        self._duels: dict[tuple[str, str], list[float]] = {}
        self._timing = self.timed  # off inside a ladder, whose steps are not timed

    # -- the two ways in ---------------------------------------------------------------------------

    def auto(self) -> None:
        """Measure each engine's fastest graph, then walk the chains, the faster engine first."""
        chains: list[tuple[Entry | None, Callable[[Entry | None], None]]] = []
        openvino_reason = ov_int8.unavailable(self.cpu)
        if Backend.OPENVINO in self.options.engines:
            for recipe in ov_int8.RECIPES:
                reason = ov_int8.refused(recipe, self.cpu)
                if reason is not None and openvino_reason is None:
                    self._prune(recipe.name, reason)
            if openvino_reason is not None:
                self.progress(f"int8: OpenVINO candidates skipped: {openvino_reason}")
            else:
                self._measure_openvino(ov_int8.RECIPES[0])
                chains.append((self.candidates[-1], self._openvino_chain))
        if Backend.ONNXRUNTIME in self.options.engines:
            first = self._try_onnxruntime(named_recipe(_FASTEST, self.cpu))
            chains.append((self.candidates[-1] if first else None, self._onnxruntime_chain))
        for head, walk in sorted(chains, key=lambda chain: -chain[0][0].texts_per_s if chain[0] else 0.0):
            walk(head)
        if not self.candidates:
            failures = "; ".join(f"{name}: {why}" for name, why in self.failed.items())
            raise ExportError(
                f"--int8 auto could build no candidate ({failures})"
                if self.failed
                else "--int8 auto found no candidate it could build: OpenVINO is not usable here and the search "
                "was limited to it (--int8-engine openvino); install it or allow onnxruntime"
            )

    def fixed(self, name: str) -> None:
        """Build and measure the one recipe `--int8 NAME` names."""
        fixed = ov_int8.named(name)
        if fixed is not None:
            reason = ov_int8.refused(fixed, self.cpu)
            if reason is not None:
                raise ExportError(f"--int8 {name} is {reason}; use openvino-static, openvino-smooth or auto")
            if fixed.accurate_nodes:
                self._measure_openvino_mixed(fixed.accurate_nodes)
            else:
                self._measure_openvino(fixed)
            return
        recipe = named_recipe(name, self.cpu)
        if recipe.mode == "mixed":
            self._rank_onnxruntime()
        self._measure_onnxruntime(recipe, [node for node, _ in self.ranking])

    # -- the chains ---------------------------------------------------------------------------------

    def _openvino_chain(self, head: Entry | None) -> None:
        """static (measured) → smooth → ffn-accurate → smooth-ffn-accurate → openvino-mixed-K."""
        if self._passes("openvino") or self._dominated("openvino", head):
            return
        fixed = [r for r in ov_int8.recipes_for(self.cpu) if r is not ov_int8.RECIPES[0]]
        if not fixed:
            return
        # The most accurate fixed recipe first: if it misses the target the others would too.
        last = self._measure_openvino(fixed[-1])
        if last.meets_target:
            for recipe in reversed(fixed[:-1]):
                if not self._measure_openvino(recipe).meets_target:
                    break
            self._prune_rest([r.name for r in fixed], "a faster recipe of the same engine met the target")
            return
        for recipe in fixed[:-1]:
            self._prune(recipe.name, f"less accurate than {last.recipe}, which missed the target")
        if ov_int8.refused(ov_int8.mixed(1), self.cpu) is None:
            self._rank_openvino()
            self._ladder(len(self.openvino_ranking), self._measure_openvino_mixed, "openvino")

    def _onnxruntime_chain(self, head: Entry | None) -> None:
        """dynamic-per-tensor (measured) → dynamic → smooth-dynamic → split-dynamic → mixed-K → blockwise;
        the static and u8 × u8 recipes beside it only where they could still win."""
        chain = {recipe.name: recipe for recipe in recipes_for(self.cpu)}
        order = [
            "dynamic",
            "dynamic-reduce-range",
            "smooth-dynamic",
            "split-dynamic",
            "ladder",
            "blockwise",
        ]
        for name in order:
            if self._passes("onnxruntime"):
                self._prune_rest(order[order.index(name) :], "a faster recipe of the same engine met the target")
                break
            if self._dominated("onnxruntime", head):
                self._prune_rest(order[order.index(name) :], self._why_dominated("onnxruntime", head))
                return
            if name == "ladder":
                self._rank_onnxruntime()
                self._ladder(len(self.ranking), self._measure_onnxruntime_mixed, "onnxruntime")
            elif name in chain:
                self._try_onnxruntime(chain[name])
        # Beside the chain: u8 × u8 avoids the u8 × s8 saturation of CPUs without VNNI, and is slower
        # elsewhere; the static recipes share one kernel, so the first one's speed bounds the others.
        if self.cpu.vnni or self.cpu.machine in ("aarch64", "arm64"):
            self._prune("dynamic-u8u8", "u8 × u8 kernels are slower than u8 × s8 on CPUs with VNNI or on Arm")
        elif not self._dominated("onnxruntime", head):
            self._try_onnxruntime(chain["dynamic-u8u8"])
        bound = head
        for name in (name for name in chain if name.startswith("static-")):
            if self._dominated("onnxruntime", bound):
                self._prune(name, self._why_dominated("static QDQ", bound))
                continue
            if self._try_onnxruntime(chain[name]) is not None:
                bound = self.candidates[-1]

    def _ladder(self, nodes: int, measure: Callable[[int], Candidate], engine: str) -> None:
        """The fewest accurate nodes that meet the target, by bisection (accuracy grows with k, speed
        falls); all of them accurate is measured only when no fewer passed. Steps are not timed: the
        fewest that pass is the ladder's fastest, and only it is timed."""
        steps: dict[int, Candidate] = {}
        self._timing = False
        try:
            failed, passed = 0, nodes
            while passed - failed > 1:
                middle = (failed + passed) // 2
                steps[middle] = measure(middle)
                if steps[middle].meets_target:
                    passed = middle
                else:
                    failed = middle
            if nodes and passed not in steps:
                steps[passed] = measure(passed)
        finally:
            self._timing = self.timed
        if nodes and steps[passed].meets_target:
            self.progress(f"int8: {engine} ladder: {passed} accurate nodes are the fewest that meet the target")
            self._time(steps[passed])

    # -- measuring ----------------------------------------------------------------------------------

    def _measure_onnxruntime(self, recipe: Recipe, order: Sequence[str] = ()) -> Candidate:
        source = self._source_graph(recipe)
        methods = node_methods(self.base, recipe, order)
        out = self.context.work_dir / f"int8-{recipe.name}.onnx"
        build(recipe, source, methods, out, self.context.calibration, self.context.input_names)
        counts = {method: sum(1 for m in methods.values() if m is method) for method in NodeMethod}
        counted = (
            counts[NodeMethod.FP32],
            counts[NodeMethod.BLOCKWISE],
            counts[NodeMethod.DYNAMIC] + counts[NodeMethod.STATIC],
        )
        plain = {key: m.value for key, m in methods.items()}
        return self._record(recipe.name, recipe.describe(), GraphFile(out), plain, counted)

    def _measure_onnxruntime_mixed(self, k: int) -> Candidate:
        return self._measure_onnxruntime(mixed_recipe(self.cpu, k), [node for node, _ in self.ranking])

    def _try_onnxruntime(self, recipe: Recipe) -> Candidate | None:
        """A fixed recipe in `auto`: one the quantizer cannot build leaves the others to choose from."""
        try:
            return self._measure_onnxruntime(recipe)
        except ExportError as exc:
            self.failed[recipe.name] = str(exc)
            self.progress(f"int8: {recipe.name:<20} skipped: {exc}")
            return None

    def _measure_openvino(self, recipe: ov_int8.OpenVINORecipe) -> Candidate:
        model = ov_int8.quantize_model(
            recipe, self.context.exported, self.context.calibration, self.context.input_names, self.cpu
        )
        if recipe == ov_int8.LADDER_BASE:
            self._openvino_base = model
        return self._record_openvino(recipe, model)

    def _measure_openvino_mixed(self, k: int) -> Candidate:
        self._rank_openvino()
        groups = [group for group, _ in self.openvino_ranking[:k]]
        model = ov_int8.restore(self._openvino_base, [name for group in groups for name in group])
        return self._record_openvino(ov_int8.mixed(k), model)

    def _record_openvino(self, recipe: ov_int8.OpenVINORecipe, model: Any) -> Candidate:
        out = self.context.work_dir / f"int8-{recipe.name}.xml"
        graph, int8, accurate = ov_int8.save(model, out, self.cpu)
        methods = {"int8 MatMuls": str(int8), "accurate MatMuls": str(accurate), "precision": str(graph.precision)}
        return self._record(recipe.name, recipe.describe(), graph, methods, (accurate, 0, int8))

    def _record(
        self, name: str, description: str, graph: GraphFile, methods: dict[str, str], counted: tuple[int, int, int]
    ) -> Candidate:
        # A candidate that cannot be kept need not be run alone once its batches miss the target; with
        # --allow-below-target the most accurate is kept, so every candidate is measured in full.
        stop_below = None if self.options.allow_below_target else self.options.target_cosine
        proof = proof_measure(graph, self.context, stop_below)
        meets = proof.meets(self.options.target_cosine)
        # A candidate that misses the target is timed only when its speed bounds others (an engine's first).
        timed = self._timing and (meets or not any(c.backend == graph.backend.value for c, _, _ in self.candidates))
        speed = throughput(graph, self.context) if timed else 0.0
        candidate = Candidate(
            recipe=name,
            description=description,
            cosine_min=round(proof.cosine_min, 6),
            cosine_mean=round(proof.cosine_mean, 6),
            texts_per_s=round(speed, 1),
            speedup=round(speed / self.fp32_speed, 3) if timed else 0.0,
            meets_target=meets,
            fp32_nodes=counted[0],
            blockwise_nodes=counted[1],
            int8_nodes=counted[2],
            backend=graph.backend.value,
            invariance_min=round(proof.invariance_min, 6) if proof.alone_measured else None,
        )
        self.candidates.append((candidate, graph, methods))
        speed_note = f"{candidate.texts_per_s:7.1f} texts/s ({candidate.speedup:.2f}× fp32)" if timed else "not timed"
        self.progress(
            f"int8: {name:<20} min cos {candidate.cosine_min:.4f}  mean {candidate.cosine_mean:.4f}  "
            f"{invariance_note(candidate)}  {speed_note}"
        )
        return candidate

    def _time(self, candidate: Candidate) -> None:
        """Time a candidate measured without its speed, in place."""
        index = next(i for i, (c, _, _) in enumerate(self.candidates) if c is candidate)
        _, graph, methods = self.candidates[index]
        speed = throughput(graph, self.context)
        timed = replace(candidate, texts_per_s=round(speed, 1), speedup=round(speed / self.fp32_speed, 3))
        self.candidates[index] = (timed, graph, methods)
        self.progress(f"int8: {candidate.recipe:<20} {timed.texts_per_s:7.1f} texts/s ({timed.speedup:.2f}× fp32)")

    # -- sensitivity --------------------------------------------------------------------------------

    def _rank_onnxruntime(self) -> None:
        if not self.ranking:
            recipe = mixed_recipe(self.cpu, 0)
            self.ranking = rank_onnxruntime(self.base, self._source_graph(recipe), recipe, self.context, self.progress)

    def _rank_openvino(self) -> None:
        if self.openvino_ranking:
            return
        if self._openvino_base is None:
            self._openvino_base = ov_int8.quantize_model(
                ov_int8.LADDER_BASE, self.context.exported, self.context.calibration, self.context.input_names, self.cpu
            )
        self.openvino_ranking = rank_openvino(self._openvino_base, self.context, self.cpu, self.progress)

    # -- bookkeeping --------------------------------------------------------------------------------

    def _source_graph(self, recipe: Recipe) -> Path:
        """The graph `recipe` quantizes: the typed one, smoothed and/or split as it says (built once)."""
        key = (recipe.smooth_alpha, recipe.outlier_units)
        if key == (None, 0):
            return self.typed
        if key not in self._prepared:
            import onnx

            model, smoothed, split = self.base, 0, 0
            context = self.context
            if recipe.smooth_alpha is not None:
                model, smoothed = smooth(model, context.calibration, context.input_names, recipe.smooth_alpha)
            if recipe.outlier_units:
                model, split = split_outlier_units(
                    model, context.calibration, context.input_names, recipe.outlier_units
                )
            path = context.work_dir / f"int8-prepared-{len(self._prepared)}.onnx"
            onnx.save(model, str(path))
            self._prepared[key] = (path, smoothed, split)
        return self._prepared[key][0]

    def _passes(self, engine: str) -> bool:
        return any(c.meets_target and c.backend == engine for c, _, _ in self.candidates)

    def _best(self) -> Entry | None:
        passing = [entry for entry in self.candidates if entry[0].meets_target]
        return max(passing, key=lambda entry: entry[0].texts_per_s) if passing else None

    def _dominated(self, engine: str, bound: Entry | None) -> bool:
        """Whether `bound` (the fastest graph left to `engine`'s chain) runs slower than the best passing
        candidate of another engine. One timing each is too noisy on a small machine to decide that, so
        the two are timed again side by side first (once per pair)."""
        best = self._best()
        if bound is None or best is None or best[0].backend == engine:
            return False
        key = (bound[0].recipe, best[0].recipe)
        if key not in self._duels:
            self._duels[key] = alternating_throughput([bound[1], best[1]], self.context, _DUEL_ROUNDS)
            ours, theirs = self._duels[key]
            self.progress(f"int8: {key[0]} {ours:.1f} vs {key[1]} {theirs:.1f} texts/s, side by side")
        ours, theirs = self._duels[key]
        return ours < theirs * (1 - MARGIN)

    def _why_dominated(self, what: str, bound: Entry | None) -> str:
        best = self._best()
        assert best is not None and bound is not None  # only asked after _dominated said so
        ours, theirs = self._duels[(bound[0].recipe, best[0].recipe)]
        return (
            f"{what}'s fastest INT8 ({bound[0].recipe}) ran at {ours:.1f} texts/s side by side with "
            f"{best[0].recipe} at {theirs:.1f}, which meets the target"
        )

    def _prune(self, name: str, reason: str) -> None:
        if name not in self.pruned and not any(c.recipe == name for c, _, _ in self.candidates):
            self.pruned[name] = reason
            self.progress(f"int8: {name:<20} not built: {reason}")

    def _prune_rest(self, names: Sequence[str], reason: str) -> None:
        for name in names:
            if name == "ladder":
                self._prune("mixed-K", reason)
            elif name in {r.name for r in recipes_for(self.cpu)} or ov_int8.named(name) is not None:
                self._prune(name, reason)

    def prepared_counts(self, recipe: Recipe) -> tuple[int, int]:
        """How many inputs were smoothed and outlier units split in the graph `recipe` quantized."""
        _, smoothed, split = self._prepared.get((recipe.smooth_alpha, recipe.outlier_units), (None, 0, 0))
        return smoothed, split


def invariance_note(candidate: Candidate) -> str:
    if candidate.invariance_min is None:
        return "batched only (missed the target there)"
    return f"batch-invariance {candidate.invariance_min:.4f}"
