"""Embedding corpora larger than one process on Ray Data (extra `bertx[ray]`).

`embed_corpus(CorpusJob(...), inputs)` reads Parquet or JSONL files with a text and an id column and
writes Parquet shards of (id, embedding) with the job's settings in each file's metadata; a job run again
skips the shards that are finished. Nothing here is imported by `import bertx`.
"""

from __future__ import annotations

from bertx.errors import MissingDependencyError

INSTALL = "pip install 'bertx[ray]'"

try:
    import pyarrow  # noqa: F401
    import ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a process without the extra
    raise MissingDependencyError(
        f"the cluster engine needs Ray and pyarrow ({exc.name} is missing): {INSTALL}"
    ) from None

from .job import DONE_FILE, JOB_FILE, CorpusJob, JobResult, embed_corpus  # noqa: E402

__all__ = ["DONE_FILE", "INSTALL", "JOB_FILE", "CorpusJob", "JobResult", "embed_corpus"]
