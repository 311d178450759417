"""Dynamic batching: concurrent requests coalesced into rounds that one worker thread runs.

Each request is split into jobs of at most `max_batch_tokens` tokens (a request too big for one
round is split, not refused). A scheduler task on the event loop takes the oldest job and every job
queued behind it, up to the token budget (waiting up to `max_wait_ms` for more, 0 by default), and runs
the round in the worker thread, off the event loop; requests that arrive meanwhile make up the next
round. The model inside sorts a round's texts by length and cuts it into token-budget batches, so each
caller's texts share batches with everyone else's and each caller gets exactly its own rows back.

The queue is bounded in tokens: a request that would overflow it is refused at once (`Overloaded`,
an HTTP 503 with Retry-After) instead of waiting without bound. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bertx.errors import OptionError

# Runs one group of same-keyed items in the worker thread; returns one result per item, in order.
RunGroup = Callable[[Hashable, list[Any]], Sequence[Any]]


@dataclass(frozen=True)
class BatchSettings:
    """How rounds are formed and how much may wait.

    Attributes:
        max_batch_tokens: Tokens one round holds; a request with more is split across rounds.
        max_wait_ms: How long a round that is not full waits for more requests. The default, 0, runs what
            is queued as soon as the worker is free: requests that arrive while a round runs make up the
            next one, so a busy server batches by itself and a lone request does not wait.
        max_queue_tokens: Tokens that may wait; a request that would exceed it is refused (503).
    """

    max_batch_tokens: int = 8192
    max_wait_ms: float = 0.0
    max_queue_tokens: int = 262_144

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_queue_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise OptionError(f"max_wait_ms must be from 0 to 1000, got {self.max_wait_ms!r}")
        if self.max_queue_tokens < self.max_batch_tokens:
            raise OptionError("max_queue_tokens must be at least max_batch_tokens")


class Overloaded(Exception):
    """The queue cannot take the request now; `retry_after` is a hint in whole seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    tokens: int
    future: asyncio.Future[Sequence[Any]]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class RoundStats:
    """What one round held, for metrics."""

    texts: int
    tokens: int
    requests: int
    seconds: float
    calls: int = 1  # model calls: one per distinct recipe among the round's requests


class Batcher:
    """Coalesces `submit` calls from many coroutines into rounds run by `run_group` in one thread."""

    def __init__(
        self,
        run_group: RunGroup,
        settings: BatchSettings,
        on_round: Callable[[RoundStats], None] = lambda stats: None,
    ) -> None:
        self._run_group = run_group
        self.settings = settings
        self._on_round = on_round
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._carried: _Job | None = None
        self._queued_tokens = 0
        self._queued_texts = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertx-batch")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._seconds_per_token = 0.0  # measured, for Retry-After

    @property
    def queued_texts(self) -> int:
        """Texts accepted and not yet run."""
        return self._queued_texts

    @property
    def queued_tokens(self) -> int:
        """Tokens accepted and not yet run."""
        return self._queued_tokens

    def start(self) -> None:
        """Start the scheduler on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._schedule(), name="bertx-batcher")

    async def submit(self, key: Hashable, items: Sequence[Any], tokens: Sequence[int]) -> list[Any]:
        """Queue `items` (with their token counts) under `key` and return their results, in order.

        Raises:
            Overloaded: the queue is full, or the batcher is shutting down.
        """
        if self._closing:
            raise Overloaded("the server is shutting down", retry_after=1)
        total = sum(tokens)
        if self._queued_tokens and self._queued_tokens + total > self.settings.max_queue_tokens:
            wait = max(1, round(self._queued_tokens * self._seconds_per_token + 0.5))
            raise Overloaded(
                f"the queue is full ({self._queued_tokens} tokens waiting, limit {self.settings.max_queue_tokens})",
                retry_after=wait,
            )
        loop = asyncio.get_running_loop()
        jobs = []
        for part in _split(list(items), list(tokens), self.settings.max_batch_tokens):
            part_items, part_tokens = part
            jobs.append(_Job(key, part_items, sum(part_tokens), loop.create_future()))
        for job in jobs:
            self._queued_tokens += job.tokens
            self._queued_texts += len(job.items)
            self._queue.put_nowait(job)
        results = await asyncio.gather(*(job.future for job in jobs))
        return list(itertools.chain.from_iterable(results))

    async def close(self) -> None:
        """Refuse new work, run everything already accepted, then stop the worker thread."""
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = self._carried or await self._queue.get()
            self._carried = None
            if first is None:
                return
            jobs, stop = await self._gather_round(first)
            tokens = sum(job.tokens for job in jobs)
            texts = sum(len(job.items) for job in jobs)
            started = time.perf_counter()
            try:
                outcomes = await loop.run_in_executor(self._executor, self._run_round, jobs)
            finally:
                self._queued_tokens -= tokens
                self._queued_texts -= texts
            seconds = time.perf_counter() - started
            if tokens:
                self._seconds_per_token = seconds / tokens
            for job, outcome in zip(jobs, outcomes):
                if job.future.done():  # the caller went away
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
            self._on_round(RoundStats(texts, tokens, len(jobs), seconds, len({job.key for job in jobs})))
            if stop:
                return

    async def _gather_round(self, first: _Job) -> tuple[list[_Job], bool]:
        """The jobs of one round, and whether the stop sentinel was reached."""
        jobs, tokens = [first], first.tokens
        deadline = time.perf_counter() + self.settings.max_wait_ms / 1000
        while tokens < self.settings.max_batch_tokens:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._closing:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if job is None:
                return jobs, True
            if tokens + job.tokens > self.settings.max_batch_tokens:
                self._carried = job
                break
            jobs.append(job)
            tokens += job.tokens
        return jobs, False

    def _run_round(self, jobs: list[_Job]) -> list[Sequence[Any] | BaseException]:
        """In the worker thread: run each key's items in one call and hand each job its slice."""
        outcomes: list[Sequence[Any] | BaseException] = [() for _ in jobs]
        groups: dict[Hashable, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job.key, []).append(index)
        for key, members in groups.items():
            items = [item for index in members for item in jobs[index].items]
            try:
                results = self._run_group(key, items)
            except Exception as exc:  # each caller of the group gets the error, the server goes on
                for index in members:
                    outcomes[index] = exc
                continue
            start = 0
            for index in members:
                count = len(jobs[index].items)
                outcomes[index] = results[start : start + count]
                start += count
        return outcomes


def _split(items: list[Any], tokens: list[int], budget: int) -> list[tuple[list[Any], list[int]]]:
    """Consecutive parts of at most `budget` tokens (a single longer item is a part of its own)."""
    parts: list[tuple[list[Any], list[int]]] = []
    start, total = 0, 0
    for index, count in enumerate(tokens):
        if index > start and total + count > budget:
            parts.append((items[start:index], tokens[start:index]))
            start, total = index, 0
        total += count
    parts.append((items[start:], tokens[start:]))
    return parts
