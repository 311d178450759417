"""A process that only loads one engine and embeds: `python -m bertx.bench.worker ENGINE ARTIFACT THREADS MODE`.

MODE is `first` (embed one text, for cold start), `rss FILE BATCH` (embed the file's lines at batch
BATCH, or with the engine's defaults for `default`, and print the peak resident memory),
`measure SPEC OUT` (run the workloads in SPEC through `harness.measure`, write OUT.json and the corpus
vectors to OUT.npy) or `baseline FILE VECTORS GROUPS` (the in-process figures `bertx bench-serve` holds
the server to, printed as JSON, and the file's vectors at the engine's defaults saved to VECTORS). Only
what the engine itself needs is imported.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> None:
    engine_name, artifact, threads, mode = argv[:4]
    from .engines import Skipped, load_engine

    engine = load_engine(engine_name, Path(artifact), int(threads))
    if isinstance(engine, Skipped):
        raise SystemExit(f"{engine.name} skipped: {engine.reason}")
    if mode == "first":
        engine.encode(["Hello, world!"], 1)
        return
    if mode == "measure":
        _measure(engine, Path(argv[4]), Path(argv[5]))
        return
    texts = Path(argv[4]).read_text(encoding="utf-8").splitlines()
    if mode == "baseline":
        _baseline(engine, texts, Path(argv[5]), [int(g) for g in argv[6].split(",")])
        return
    if argv[5] == "default":
        engine.encode_default(texts)
    else:
        engine.encode(texts, int(argv[5]))
    print(json.dumps({"peak_rss_mb": _peak_kb() / 1024}))


def _measure(engine: Any, spec_file: Path, out: Path) -> None:
    import warnings

    import numpy as np

    from bertx.model import TruncationWarning

    from .harness import Settings, measure

    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    fields = spec["settings"]
    for key in ("batch_sizes", "fixed_lengths"):
        fields[key] = tuple(fields[key])
    if fields.get("engines") is not None:
        fields["engines"] = tuple(fields["engines"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        measured = measure(engine, spec["workloads"], Settings(**fields))
    np.save(out.with_suffix(".npy"), measured.vectors)
    body = {
        "size_bytes": measured.size_bytes,
        "timings": measured.timings,
        "latency_ms": measured.latency_ms,
        "details": measured.details,
    }
    out.with_suffix(".json").write_text(json.dumps(body), encoding="utf-8")


def _baseline(engine: Any, texts: list[str], vectors: Path, groups: list[int]) -> None:
    import warnings

    import numpy as np

    from bertx.model import TruncationWarning

    from .serve_load import baseline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        np.save(vectors, engine.encode_default(texts).astype(np.float32))
        figures = baseline(engine.encode_default, texts, groups)
    print(json.dumps(figures))


def _peak_kb() -> float:
    """Peak resident set of this process in kB.

    /proc's VmHWM belongs to this program's address space; ru_maxrss would also count the parent's
    pages that the fork before exec touched, which made every engine look as big as the harness.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


if __name__ == "__main__":
    main(sys.argv[1:])
