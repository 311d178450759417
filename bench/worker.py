"""A process that only loads one engine and embeds: `python -m bertx.bench.worker ENGINE ARTIFACT THREADS MODE`.

MODE is `first` (embed one text, for cold start), `rss FILE BATCH` (embed the file's lines at batch
BATCH, or with the engine's defaults for `default`, and print the peak resident memory),
`rounds SPEC VECTORS` (warm up, save the corpus vectors to VECTORS, then run one timed round of
SPEC's workloads for every `round` line on stdin, answering each with a JSON line) or
`baseline FILE VECTORS GROUPS` (the in-process figures `bertx bench-serve` holds the server to, printed
as JSON, and the file's vectors at the engine's defaults saved to VECTORS). Only what the engine itself
needs is imported.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> None:
    engine_name, artifact, threads, mode = argv[:4]
    from .engine_types import Skipped
    from .engines import load_engine

    engine = load_engine(engine_name, Path(artifact), int(threads))
    if isinstance(engine, Skipped):
        raise SystemExit(f"{engine.name} skipped: {engine.reason}")
    if mode == "first":
        engine.encode(["Hello, world!"], 1)
        return
    if mode == "rounds":
        _rounds(engine, Path(argv[4]), Path(argv[5]))
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


def _rounds(engine: Any, spec_file: Path, vectors_file: Path) -> None:
    """Prepare (warm-up, corpus vectors, latency), say so on the protocol stream, then run one timed
    round per `round` line read from stdin until stdin closes."""
    import os
    import warnings

    import numpy as np

    from bertx.model import TruncationWarning

    from .measuring import Settings, one_round, prepare

    # Replies go to the real stdout; anything the engine's libraries print goes to stderr instead.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    fields = spec["settings"]
    for key in ("batch_sizes", "fixed_lengths", "engines"):
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    settings, workloads = Settings(**fields), spec["workloads"]

    def reply(body: dict[str, Any]) -> None:
        protocol.write(json.dumps(body) + "\n")
        protocol.flush()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        vectors, latency = prepare(engine, workloads, settings)
        np.save(vectors_file, vectors)
        reply({"size_bytes": engine.size_bytes, "latency_ms": latency, "details": dict(engine.details)})
        for line in sys.stdin:
            if line.strip() != "round":
                break
            reply({"timings": one_round(engine, workloads, settings)})


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
