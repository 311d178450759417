"""`embed_corpus`: sentence vectors for a corpus on Ray Data, resumable, from the same artifact as the runtime.

Ray Data runs a pool of actors; each loads the artifact once (onnxruntime threads = the CPUs Ray gives it)
and embeds whole shards with the runtime's own `Model.encode`, token-budget batches included. The job
folder records the plan (`_bertx_job.json`); each finished shard is one `part-NNNNN.parquet`, renamed into
place only when complete, and `_bertx_done.json` is written when every shard is there. A job run again
skips the finished shards, so an interrupted job re-embeds at most the shards that were in flight; a
worker that dies is restarted by Ray and its shard run again, and the rename makes that exact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import bertx
from bertx import errors
from bertx.batching import DEFAULT_BATCH_TOKENS
from bertx.embedding_files import atomic_write
from bertx.errors import BertxError, InputFileError, OptionError, ProviderError
from bertx.loading import LoadOptions
from bertx.manifest import Manifest
from bertx.options import CHUNKS, SENTENCE, EncodeOptions

from . import shards
from .shards import Shard

JOB_FILE = "_bertx_job.json"
GPU_DEVICES = ("cuda", "tensorrt")
DONE_FILE = "_bertx_done.json"


@dataclass(frozen=True)
class CorpusJob:
    """What to embed and how: the part of a job that must not change between a run and its resume.

    Attributes:
        artifact: The artifact folder (the same path must be readable from every node).
        output: The job folder: part files, the plan and the done record.
        text_column / id_column: Where each row's text and id are (Parquet column or JSONL field). Without an
            id column a row's id is its line (JSONL) or row (Parquet) number in its file, from 1, as
            `bertx embed` numbers a single file; when the job reads several files, "FILE:NUMBER".
        variant: The precision variant to run. device: cpu, cuda, openvino … [the variant's engine].
        options: Sentence options by their names in `bertx.options` (pooling, layers, normalize_embeddings,
            prompt_name, …; layers may be written as the command line writes them).
        dtype: float32 or float16 vectors in the part files.
        shard_rows: Rows per shard: the unit of parallelism, of progress and of resuming.
        batch_size / batch_tokens: Batching inside each actor, as in `Model.encode`.
        verify: Check the model files' sha256 when each actor loads them.
        kind: sentence (a vector per row) or chunks (late chunking: a part-file row per chunk of each text,
            with its id, `chunk` index, `start` and `end` character span and `text`).
    """

    artifact: str
    output: str
    text_column: str = "text"
    id_column: str | None = None
    variant: str = "fp32"
    device: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    shard_rows: int = 10_000
    batch_size: int = 32
    batch_tokens: int | None = DEFAULT_BATCH_TOKENS
    verify: bool = True
    kind: str = SENTENCE

    def load_options(self, threads: int) -> LoadOptions:
        return LoadOptions(self.variant, self.device, threads, batch_tokens=self.batch_tokens, verify=self.verify)

    def settings(self) -> dict[str, Any]:
        """What the part files' metadata and the job record hold (the output folder and the file check, which
        change nothing in the vectors, left out)."""
        body = asdict(self)
        body.pop("output")
        body.pop("verify")
        return body


@dataclass(frozen=True)
class JobResult:
    """How a run of a job went."""

    output: Path
    shards: int
    skipped: int  # finished by an earlier run
    embedded: int  # finished by this run
    rows: int  # rows embedded by this run
    seconds: float

    @property
    def texts_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def encode_options(options: dict[str, Any], kind: str = SENTENCE) -> EncodeOptions:
    """A job's JSON options as one checked value (sentence options, or late chunking's)."""
    if kind not in (SENTENCE, CHUNKS):
        raise OptionError(f"a corpus job writes sentence vectors or chunks, not {kind!r}")
    if options.get("pooling") == "none":
        raise OptionError("a corpus job writes sentence vectors: pooling='none' (token vectors) is not one")
    return EncodeOptions.from_mapping(options, kind)


class ShardEmbedder:
    """A Ray Data actor: loads the artifact once, then embeds and writes whole shards."""

    def __init__(self, job: dict[str, Any], threads: int) -> None:
        self.job = CorpusJob(**job)
        self.model = bertx.Model.load(self.job.artifact, self.job.load_options(threads))
        self.meta = {"bertx": bertx.__version__, **self.job.settings()}
        self.recipe = self.model.recipe(encode_options(self.job.options, self.job.kind), self.job.kind)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        done: dict[str, list[Any]] = {"index": [], "rows": [], "seconds": [], "error": [], "error_type": []}
        for spec in batch["shard"]:
            shard = Shard(**json.loads(str(spec)))
            started = time.perf_counter()
            target = Path(self.job.output) / shard.part
            error = kind = ""
            try:
                if not target.exists():  # a retried task whose shard another attempt finished
                    ids, texts = shards.read(shard, self.job.text_column, self.job.id_column)
                    computed = self.model.compute(texts, self.recipe, batch_size=self.job.batch_size)
                    meta = {**self.meta, "shard": asdict(shard)}
                    if self.job.kind == CHUNKS:
                        columns, vectors = shards.chunk_rows(ids, computed, self.model.hidden_size)  # type: ignore[arg-type]
                    else:
                        columns, vectors = {"id": ids}, np.asarray(computed)
                    shards.write(target, columns, vectors.astype(self.job.dtype, copy=False), meta)
            except BertxError as exc:
                # The data's fault (a row without text, an unreadable file): retrying will not help, and the
                # driver says it in bertx's words rather than as a Ray traceback.
                error, kind = str(exc), type(exc).__name__
            done["index"].append(shard.index)
            done["rows"].append(shard.rows)
            done["seconds"].append(time.perf_counter() - started)
            done["error"].append(error)
            done["error_type"].append(kind)
        return done


def embed_corpus(
    job: CorpusJob,
    inputs: str | Sequence[str],
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    progress: Callable[[str], None] = lambda message: None,
    gpus_per_worker: float | None = None,
) -> JobResult:
    """Embed every row of `inputs` (Parquet or JSONL files, a folder or a glob) into Parquet shards on Ray.

    Args:
        job: What to embed and how; a job folder that already holds another job is refused.
        inputs: A folder, a glob, a file, or a list of them.
        address: A Ray cluster to join ("auto": the one this machine belongs to); default: a local Ray
            started with the CPUs this process may use, unless Ray is already initialized.
        workers: Actors (model copies) to run; default: as many as the cluster's CPUs allow.
        cpus_per_worker: CPUs each actor reserves, and its onnxruntime threads.
        gpus_per_worker: GPUs each actor reserves; default 1 for device cuda or tensorrt, else none.

    Returns:
        A `JobResult` (shards finished before and now, rows embedded, seconds).

    Raises:
        InputFileError: unreadable inputs, a row without a text or id, an output folder holding another job.
        MissingDependencyError: Ray is not installed (extra `bertx[ray]`).
        ProviderError: a GPU device is asked for and the cluster has no GPUs.
    """
    import ray

    _check(job, cpus_per_worker, workers)
    gpus = (1.0 if job.device in GPU_DEVICES else 0.0) if gpus_per_worker is None else gpus_per_worker
    if gpus < 0:
        raise OptionError(f"gpus_per_worker must be 0 or more, got {gpus_per_worker}")
    if gpus:
        _start(ray, address)  # the cluster's GPUs are known only once joined: check before planning
        if ray.cluster_resources().get("GPU", 0) < gpus:
            raise ProviderError(
                f"device {job.device or 'cpu'} asks for {gpus:g} GPU per worker and the Ray cluster has "
                f"{ray.cluster_resources().get('GPU', 0):g}; join a cluster with GPUs (--address) or use the CPU"
            )
    out = Path(job.output)
    files = shards.input_files(inputs)
    planned = _load_or_plan(job, files, out, progress)
    _remove_partials(out)
    todo = [s for s in planned if not (out / s.part).exists()]
    skipped = len(planned) - len(todo)
    if skipped:
        progress(f"{skipped} of {len(planned)} shards already done: skipping them")
    started = time.perf_counter()
    rows = 0
    if todo:
        _start(ray, address)
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 1)) // cpus_per_worker
        if gpus:
            fits = min(fits, int(resources.get("GPU", 0) // gpus))
        pool = max(1, min(workers or fits, len(todo)))
        each = f"{cpus_per_worker} CPU" + (f" + {gpus:g} GPU" if gpus else "")
        progress(f"embedding {len(todo)} shards with {pool} workers × {each}")
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        items = [{"shard": json.dumps(asdict(s))} for s in todo]
        results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardEmbedder,
            fn_constructor_kwargs={"job": asdict(job), "threads": cpus_per_worker},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=cpus_per_worker,
            num_gpus=gpus or None,
        )
        finished = skipped
        for row in results.iter_rows():
            if row["error"]:
                raise getattr(errors, str(row["error_type"]), BertxError)(str(row["error"]))
            finished += 1
            rows += int(row["rows"])
            progress(f"shard {int(row['index']):>5} done ({int(row['rows'])} rows)  {finished}/{len(planned)}")
    seconds = time.perf_counter() - started
    missing = [s.part for s in planned if not (out / s.part).exists()]
    if missing:
        raise InputFileError(f"{len(missing)} shards were not written ({', '.join(missing[:5])}); run the job again")
    record = {"shards": len(planned), "rows": sum(s.rows for s in planned), "bertx": bertx.__version__}
    with atomic_write(out / DONE_FILE, binary=False) as handle:
        json.dump(record, handle, indent=2)
    return JobResult(out, len(planned), skipped, len(todo), rows, seconds)


def _start(ray: Any, address: str | None) -> None:
    """Join `address`, or start a local Ray with the CPUs this process may use, unless Ray runs already."""
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else _usable_cpus(),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )


def _check(job: CorpusJob, cpus_per_worker: int, workers: int | None) -> None:
    """Refuse a bad job here, in one line, rather than in every actor."""
    options = encode_options(job.options, job.kind)
    Manifest.load(Path(job.artifact))
    if job.device in (None, "cpu"):  # the other devices may exist on the workers only
        bertx.Model.load(job.artifact, job.load_options(1)).recipe(options, job.kind)
    if job.dtype not in ("float32", "float16"):
        raise OptionError(f"dtype must be float32 or float16, got {job.dtype!r}")
    if job.shard_rows < 1 or cpus_per_worker < 1 or (workers is not None and workers < 1):
        raise OptionError("shard_rows, workers and cpus_per_worker must be positive")


def _load_or_plan(job: CorpusJob, files: list[Path], out: Path, progress: Callable[[str], None]) -> list[Shard]:
    """The job folder's plan when it is this job on these files; a new plan in a new or empty folder."""
    record_file = out / JOB_FILE
    described = [asdict(f) for f in shards.describe(files)]
    if record_file.exists():
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFileError(f"cannot read {record_file}: {exc}") from exc
        if record.get("settings") != _plain(job.settings()):
            raise InputFileError(
                f"{out} holds a job with other settings ({_differences(record.get('settings', {}), job)}); "
                "give a new output folder, or delete that one to start over"
            )
        if record.get("inputs") != described:
            raise InputFileError(
                f"{out} holds a job over other input files (or they changed since); give a new output folder"
            )
        return [Shard(**s) for s in record["shards"]]
    if out.exists() and any(out.iterdir()):
        raise InputFileError(f"{out} is not empty and holds no bertx job: give a new or empty output folder")
    progress(f"planning shards of {job.shard_rows} rows over {len(files)} files")
    planned = shards.plan(files, job.shard_rows, job.text_column, job.id_column)
    if not planned:
        raise InputFileError("the input files hold no rows")
    record = {"settings": _plain(job.settings()), "inputs": described, "shards": [asdict(s) for s in planned]}
    with atomic_write(record_file, binary=False) as handle:
        json.dump(record, handle, indent=1)
    return planned


def _remove_partials(out: Path) -> None:
    """Temporary files of shards that were being written when an earlier run stopped."""
    for stale in out.glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _differences(recorded: dict[str, Any], job: CorpusJob) -> str:
    now = _plain(job.settings())
    keys = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
    return ", ".join(f"{k}: {recorded.get(k)!r} then, {now.get(k)!r} now" for k in keys[:4])


def _usable_cpus() -> int:
    from bertx.cpu import cpu_budget

    return cpu_budget().usable
