"""Where two instruction sets disagree on an OpenVINO graph: `python -m bertx.bench.isa_diff ARTIFACT`.

OpenVINO's CPU plugin (oneDNN) runs each op with kernels for the newest instruction set the CPU has: AMX
tiles, AVX-512 VNNI, AVX2. `ONEDNN_MAX_CPU_ISA` holds it to an older one, so the same graph can be run
twice on one machine with different kernels. Each side runs in a process of its own (OpenVINO reads the
cap once, when it loads). The tool:

1. embeds each text alone and in the batches `Model.encode` makes, on both sides, and reports the cosine
   between the two sides' vectors (the last hidden state, pooled as the model's defaults say), and on each
   side how far a text's vector in its batch is from its vector alone;
2. for the text the sides disagree on most, reads every MatMul's output on both sides (for that text
   alone, or for its whole batch when the batch is where they part) and names, in graph order, the first
   whose outputs disagree while its inputs still agree;
3. writes a reproducer into `--out`: that MatMul, with the quantizers and weights in front of it, as a
   small OpenVINO IR, the input it received, and `repro.py`, which runs it on both sides and prints how
   far apart they are. That folder is what an upstream bug report needs, and nothing of bertx.

Side A is the machine's own. Side B defaults, on an AMX CPU, to AVX-512 with bf16 (only the tiles differ),
elsewhere to AVX-512 VNNI. On a CPU whose best ISA is the cap itself both sides run the same kernels, and
the report says the graph agrees.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Side B by default: the instruction set just below an AMX CPU's (AVX-512 with bf16, so that a bf16 graph
# computes in bf16 on both sides and only the tiles differ); elsewhere AVX-512 VNNI.
AMX_CAP, DEFAULT_CAP = "AVX512_CORE_BF16", "AVX512_CORE_VNNI"
NO_BF16 = ("AVX2", "AVX512_CORE", "AVX512_CORE_VNNI")  # caps under which oneDNN has no bf16 instructions
BATCH = 32  # `Model.encode`'s default batch size
WAYS = ((0, "alone"), (1, "batched"))
DEFAULT_TOLERANCE = 0.999  # cosine between the sides' outputs below which a node disagrees
PROBE = "--probe"


@dataclass(frozen=True)
class Side:
    """One way to run the graph: oneDNN's instruction-set cap (None: the CPU's best) and the precision."""

    isa: str | None
    precision: str

    def describe(self) -> str:
        return f"{self.isa or 'native ISA'}, {self.precision}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "ONEDNN_MAX_CPU_ISA"}
        if self.isa:
            env["ONEDNN_MAX_CPU_ISA"] = self.isa
        return env


@dataclass(frozen=True)
class NodeDiff:
    """One MatMul's outputs on the two sides (cosine over the flattened tensor) and its inputs'."""

    name: str
    cosine: float
    inputs_cosine: float
    max_abs: float


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not np.isfinite(denominator) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return -1.0
    return float(a @ b / denominator) if denominator > 0 else float(np.array_equal(a, b))


def run_side(
    side: Side, ir: Path, feeds: Sequence[dict[str, np.ndarray]], outputs: str, work: Path
) -> list[dict[str, np.ndarray]]:
    """Run `ir` on each feed in a fresh process held to `side`; `outputs`: "model" (the graph's own outputs)
    or "matmuls" (those and every MatMul's inputs and output)."""
    work.mkdir(parents=True, exist_ok=True)
    feeds_file, out_file = work / "feeds.npz", work / f"out-{os.getpid()}-{len(feeds)}-{outputs}.npz"
    arrays: dict[str, Any] = {f"{i}:{name}": value for i, feed in enumerate(feeds) for name, value in feed.items()}
    np.savez(feeds_file, **arrays)
    request = {"ir": str(ir), "feeds": str(feeds_file), "out": str(out_file), "precision": side.precision}
    request["outputs"] = outputs
    command = [sys.executable, "-m", "bertx.bench.isa_diff", PROBE, json.dumps(request)]
    done = subprocess.run(command, env=side.env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {side.describe()} run failed:\n{done.stderr[-2000:]}")
    data = np.load(out_file)
    results: list[dict[str, np.ndarray]] = [{} for _ in feeds]
    for key in data.files:
        index, _, name = key.partition(":")
        results[int(index)][name] = data[key]
    out_file.unlink()
    return results


def probe(request: dict[str, Any]) -> None:
    """The child side, started with its cap in the environment: compile once, run every feed, save the asked
    outputs."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(request["ir"])
    names = {output.get_any_name(): position for position, output in enumerate(model.outputs)}
    if request["outputs"] == "matmuls":
        ports = {}
        for op in model.get_ordered_ops():
            if op.get_type_name() == "MatMul":
                name = op.get_friendly_name()
                ports[f"{name}|out"] = op.output(0)
                ports.update((f"{name}|in{i}", feeding) for i, feeding in activations(op))
        model.add_outputs(list(ports.values()))
        # One value can feed several MatMuls (a layer's Q, K and V): outputs are found by their source.
        position = {_key(r.input_value(0)): j for j, r in enumerate(model.get_results())}
        names.update((name, position[_key(port)]) for name, port in ports.items())
    config = {"INFERENCE_PRECISION_HINT": request["precision"], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    compiled = core.compile_model(model, "CPU", config)
    infer = compiled.create_infer_request()
    data = np.load(request["feeds"])
    feeds: dict[int, dict[str, np.ndarray]] = {}
    for key in data.files:
        index, _, name = key.partition(":")
        feeds.setdefault(int(index), {})[name] = data[key]
    saved: dict[str, Any] = {}
    for index in sorted(feeds):
        infer.infer(feeds[index])
        for name, at in names.items():
            saved[f"{index}:{name}"] = np.array(infer.get_output_tensor(at).data, dtype=np.float32)
    np.savez(request["out"], **saved)


def _key(port: Any) -> tuple[str, int]:
    return port.get_node().get_friendly_name(), port.get_index()


def activations(matmul: Any) -> list[tuple[int, Any]]:
    """The MatMul's inputs that are not weights, each as the value that feeds it: the input of its
    FakeQuantize when it has one (what the INT8 kernel quantizes), else the input itself."""
    fed = []
    for i in range(2):
        source = matmul.input_value(i)
        if _constant(source.get_node()):
            continue
        node = source.get_node()
        fed.append((i, node.input_value(0) if node.get_type_name() == "FakeQuantize" else source))
    return fed


def first_disagreement(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], tolerance: float
) -> tuple[list[NodeDiff], NodeDiff | None]:
    """Every MatMul's agreement in graph order, and the first that disagrees while its inputs agree."""
    nodes = [key[: -len("|out")] for key in a if key.endswith("|out")]
    diffs = []
    for name in nodes:
        inputs = min((cosine(a[k], b[k]) for k in a if k.startswith(f"{name}|in")), default=1.0)
        out_a, out_b = a[f"{name}|out"], b[f"{name}|out"]
        max_abs = float(np.abs(out_a - out_b).max()) if out_a.shape == out_b.shape else float("inf")
        diffs.append(NodeDiff(name, cosine(out_a, out_b), inputs, max_abs))
    culprit = next((d for d in diffs if d.cosine < tolerance and d.inputs_cosine >= tolerance), None)
    return diffs, culprit


def extract(ir: Path, node: str, shapes: dict[str, tuple[int, ...]], out: Path) -> list[str]:
    """Write the MatMul `node` with the constant subgraphs and quantizers in front of it as `out`/node.xml;
    each activation it reads (through its FakeQuantize, when it has one) becomes a Parameter of the shape it
    was probed with. Returns the MatMul inputs the Parameters stand for ("in0", "in1"), in Parameter order."""
    import openvino as ov

    model = ov.Core().read_model(str(ir))
    matmul = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == node)
    parameters, stand_for = [], []
    for i, feeding in activations(matmul):
        holder = matmul.input_value(i).get_node()
        target = holder.input(0) if holder.get_type_name() == "FakeQuantize" else matmul.input(i)
        shape = ov.PartialShape(list(shapes[f"in{i}"]))  # the shape it was probed with: a static reproducer
        parameter = ov.opset13.parameter(shape, feeding.get_element_type(), name=f"in{i}")
        target.replace_source_output(parameter.output(0))
        parameters.append(parameter)
        stand_for.append(f"in{i}")
    result = ov.opset13.result(matmul.output(0))
    ov.save_model(ov.Model([result], parameters, node), str(out / "node.xml"), compress_to_fp16=False)
    return stand_for


def _constant(node: Any, depth: int = 6) -> bool:
    """Whether `node` computes from constants only (a weight and its quantizer, within a few ops)."""
    if node.get_type_name() == "Constant":
        return True
    if node.get_type_name() == "Parameter" or depth == 0 or node.get_input_size() == 0:
        return False
    return all(_constant(node.input_value(i).get_node(), depth - 1) for i in range(node.get_input_size()))


REPRO = '''"""One OpenVINO MatMul that computes differently under two oneDNN instruction-set caps.

Run: python repro.py   (needs openvino and numpy; runs each side in its own process)
"""
import os, subprocess, sys
import numpy as np

SIDES = {sides}
HERE = os.path.dirname(os.path.abspath(__file__))

if len(sys.argv) == 2:
    import openvino as ov
    core = ov.Core()
    config = {{"INFERENCE_PRECISION_HINT": sys.argv[1], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}}
    compiled = core.compile_model(os.path.join(HERE, "node.xml"), "CPU", config)
    inputs = np.load(os.path.join(HERE, "inputs.npz"))
    result = compiled([inputs[name] for name in {names}])[0]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    np.save(os.path.join(HERE, "out-%s-%s.npy" % (isa, sys.argv[1])), result)
    sys.exit(0)

outputs = []
for isa, precision in SIDES:
    env = {{k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    subprocess.run([sys.executable, __file__, precision], env=env, check=True)
    out = np.load(os.path.join(HERE, "out-%s-%s.npy" % (isa or "native", precision)))
    outputs.append(out.astype(np.float64).ravel())
a, b = outputs
print("openvino", __import__("openvino").get_version())
print("sides (ONEDNN_MAX_CPU_ISA, precision):", SIDES)
print("cosine %.6f  max abs diff %.6g  (of max |value| %.6g)" % (
    a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), np.abs(a - b).max(), np.abs(b).max()))
'''


def write_reproducer(
    ir: Path, culprit: NodeDiff, inputs: dict[str, np.ndarray], sides: Sequence[Side], out: Path
) -> Path:
    """The culprit alone, the inputs side A gave it, and a script that runs it on both sides."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{culprit.name}|"
    shapes = {key[len(prefix) :]: value.shape for key, value in inputs.items() if key.startswith(prefix)}
    stand_for = extract(ir, culprit.name, shapes, out)
    values: dict[str, Any] = {name: inputs[f"{culprit.name}|{name}"] for name in stand_for}
    np.savez(out / "inputs.npz", **values)
    sides_literal = repr([(side.isa, side.precision) for side in sides])
    (out / "repro.py").write_text(REPRO.format(sides=sides_literal, names=json.dumps(list(values))), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == [PROBE]:
        probe(json.loads(args_list[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--variant", default="int8", help="the variant to run (its graph file, read by OpenVINO)")
    parser.add_argument("--texts", type=Path, default=CORPUS, help="one text per line [the bench corpus]")
    parser.add_argument("--limit", type=int, default=200, help="the first N texts (run alone and in batches)")
    parser.add_argument(
        "--isa", help=f"side B's ONEDNN_MAX_CPU_ISA, or native [{AMX_CAP} on AMX CPUs, else {DEFAULT_CAP}]"
    )
    parser.add_argument("--precision", help="both sides' INFERENCE_PRECISION_HINT [the variant's, else f32]")
    parser.add_argument("--precision-b", help="side B's, when it should differ from side A's")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="cosine below which sides disagree")
    parser.add_argument("--out", type=Path, default=Path("isa-diff"), help="where the report and reproducer go")
    args = parser.parse_args(args_list)
    report = diff(args)
    return 1 if report["disagree"] else 0


CORPUS = Path(__file__).with_name("data") / "corpus.txt"


def diff(args: argparse.Namespace) -> dict[str, Any]:
    from bertx.architectures import reads_padding
    from bertx.artifact import load_tokenizer
    from bertx.batching import DEFAULT_BATCH_TOKENS, plan
    from bertx.cpu import cpu_info
    from bertx.manifest import Manifest, Precision
    from bertx.pooling import cosine_rows, pool

    manifest = Manifest.load(args.artifact)
    variant = manifest.variants.get(Precision(args.variant))
    if variant is None:
        raise SystemExit(
            f"{args.artifact} has no {args.variant} variant ({', '.join(p.value for p in manifest.variants)})"
        )
    ir = args.artifact / variant.file
    precision = args.precision or variant.inference_precision or "f32"
    cpu = cpu_info()
    isa = args.isa or (AMX_CAP if cpu.amx else DEFAULT_CAP)
    sides = (Side(None, precision), Side(None if isa == "native" else isa, args.precision_b or precision))
    if sides[1].precision == "bf16" and isa.upper() in NO_BF16:
        print(f"note: {isa} has no bf16 instructions: side B's bf16 is emulated, so the sides differ in precision too")
    encoder = load_tokenizer(args.artifact, manifest)
    texts = [line for line in args.texts.read_text(encoding="utf-8").splitlines() if line.strip()][: args.limit]
    encodings = encoder.encode(texts)
    # Each text alone, then all of them in the batches `Model.encode` cuts by default (longest first).
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(-lengths, kind="stable")
    architecture = manifest.architecture
    ratio = architecture.num_heads / (4 * architecture.hidden_size)
    cuts = plan(lengths[order], BATCH, DEFAULT_BATCH_TOKENS, ratio, reads_padding(architecture.model_type))
    groups = [[int(i)] for i in range(len(texts))] + [[int(i) for i in order[a:b]] for a, b in cuts]
    batches = [encoder.pad([encodings[i] for i in group]) for group in groups]
    feeds = [batch.feeds(manifest.inputs) for batch in batches]
    last = manifest.outputs[-1]
    print(f"{ir.name} on {cpu.describe()}: A = {sides[0].describe()}, B = {sides[1].describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_side(side, ir, feeds, "model", Path(tmp)) for side in sides]
        # vectors[side][way][text], way 0: alone, 1: in its batch
        vectors = np.zeros((2, 2, len(texts), architecture.hidden_size), dtype=np.float32)
        for s, run in enumerate(runs):
            for g, (group, batch) in enumerate(zip(groups, batches)):
                vectors[s, int(g >= len(texts)), group] = pool(run[g][last], batch.mask, manifest.defaults.pooling)
        way = {name: np.nan_to_num(cosine_rows(vectors[0, w], vectors[1, w]), nan=-1.0) for w, name in WAYS}
        report: dict[str, Any] = {
            "artifact": str(args.artifact),
            "graph": variant.file,
            "cpu": cpu.describe(),
            "sides": [side.describe() for side in sides],
            "texts": len(texts),
            "batches": len(groups) - len(texts),
        }
        for name, cosines in way.items():
            below = int((cosines < args.tolerance).sum())
            report[name] = {"min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean()), "below": below}
            print(
                f"{len(texts)} texts {name}: min cosine A vs B {cosines.min():.6f}, mean {cosines.mean():.6f}, "
                f"{below} below {args.tolerance}"
            )
        for s, side in enumerate(sides):  # a text's vector in its batch against its vector alone, per side
            invariance = float(np.nan_to_num(cosine_rows(vectors[s, 0], vectors[s, 1]), nan=-1.0).min())
            report[f"batch_invariance_{'ab'[s]}"] = invariance
            print(f"side {'AB'[s]} ({side.describe()}): a text in its batch vs alone, min cosine {invariance:.6f}")
        worst_way = min(way, key=lambda name: float(way[name].min()))
        worst = int(way[worst_way].argmin())
        report["disagree"] = float(way[worst_way][worst]) < args.tolerance
        if report["disagree"]:
            g = worst if worst_way == "alone" else next(g for g in range(len(texts), len(groups)) if worst in groups[g])
            report.update(_locate(ir, feeds[g], texts[worst], worst_way, len(groups[g]), sides, args, Path(tmp)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"report: {args.out / 'report.json'}")
    return report


def _locate(
    ir: Path,
    feed: dict[str, np.ndarray],
    text: str,
    way: str,
    size: int,
    sides: Sequence[Side],
    args: argparse.Namespace,
    tmp: Path,
) -> dict[str, Any]:
    """Node by node on the worst text's run (alone, or its whole batch): the first MatMul that disagrees while
    its inputs agree, and its reproducer."""
    print(f"worst text ({len(text)} characters, {way}, {size} in the run probed): {text[:100]!r}")
    a, b = (run_side(side, ir, [feed], "matmuls", tmp)[0] for side in sides)
    diffs, culprit = first_disagreement(a, b, args.tolerance)
    disagreeing = [d for d in diffs if d.cosine < args.tolerance]
    print(f"{len(disagreeing)} of {len(diffs)} MatMuls disagree (outputs probed: kernels may fuse differently)")
    for d in disagreeing[:8]:
        print(f"  {d.name}: cosine {d.cosine:.6f}, inputs {d.inputs_cosine:.6f}, max abs diff {d.max_abs:.4g}")
    found: dict[str, Any] = {"worst_text": text, "worst_run": way, "matmuls_disagreeing": [d.name for d in disagreeing]}
    if culprit is None:
        print("no MatMul disagrees while its inputs agree: the difference starts in another op")
        return found
    folder = write_reproducer(ir, culprit, a, sides, args.out / "repro")
    done = subprocess.run([sys.executable, str(folder / "repro.py")], capture_output=True, text=True)
    print(f"first: {culprit.name}; reproducer in {folder}, which prints:\n{done.stdout}{done.stderr[-1000:]}")
    return {
        **found,
        "first": culprit.name,
        "first_cosine": culprit.cosine,
        "reproducer": str(folder),
        "reproduced": done.stdout,
    }


if __name__ == "__main__":
    raise SystemExit(main())
