"""Cross-request batching for the rerank server.

Requests that arrive together are grouped into one call of the core
(``GLiClassReranker.rerank_batch`` for listwise jobs, ``entailment`` for NLI jobs),
so they share forward passes.  A batch closes when its estimated token count
reaches ``max_batch_tokens`` or ``batch_wait_ms`` after its oldest request
arrived, whichever comes first.

The model runs in ONE worker thread (a daemon :class:`ModelThread`), so
the event loop keeps answering ``/health`` and ``/metrics`` during a long batch and
the model is never entered from two threads at once.

This module does not import FastAPI or Ray; the Ray Serve deployment reuses
:func:`run_listwise` / :func:`run_nli` with ``@serve.batch`` instead of
:class:`Batcher`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

logger = logging.getLogger("gliclass_rerank.server")

LISTWISE = "listwise"
NLI = "nli"


def estimate_tokens(text: str, cap: int | None = None) -> int:
    """Cheap upper-ish estimate of the sub-word tokens of ``text`` that will be scored (about 4 characters per
    token, at most ``cap``: the scorer cuts every text to its ``max_length`` tokens, so a 1 MB document
    costs what a 512-token one does).

    Only used for batch budgets and queue bounds, never for truncation, so it must be
    cheap enough to run on the event loop."""
    estimate = len(text) // 4 + 2
    return estimate if cap is None else min(estimate, cap)


@dataclass
class Job:
    """One request's worth of work.

    ``max_text_tokens``: the scorer's cut (its ``max_length``), so the estimate counts only what is scored."""

    kind: str  # LISTWISE or NLI
    # listwise: query + passages; nli: premises (passages) + hypotheses (claims)
    query: str | None = None
    passages: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)
    max_tokens_per_doc: int | None = None
    max_text_tokens: int | None = None
    tokens: int = 0
    batch_cost: int = 0  # Ray Serve's batch_size_fn reads this
    enqueued_at: float = 0.0
    future: asyncio.Future | None = None

    def __post_init__(self) -> None:
        if not self.tokens:
            cap = self.max_text_tokens
            doc_cap = min((c for c in (cap, self.max_tokens_per_doc) if c), default=None)
            if self.kind == LISTWISE:
                self.tokens = estimate_tokens(self.query or "", cap) + sum(
                    estimate_tokens(p, doc_cap) for p in self.passages)
            else:
                hyp = sum(estimate_tokens(h, cap) for h in self.hypotheses)
                self.tokens = sum(estimate_tokens(p, cap) + hyp for p in self.passages)


class QueueFullError(Exception):
    """Raised by :class:`Admission` when admitting a job would pass the queue bound."""

    def __init__(self, retry_after: int, reason: str):
        super().__init__(reason)
        self.retry_after = retry_after
        self.reason = reason


class Admission:
    """Bounds the work admitted but not yet finished (queued + running), in tokens and requests.

    A job is always admitted when nothing is in flight, so one large (but body-size-capped)
    request can still run on an idle server.  ``Retry-After`` is estimated from the measured
    token throughput."""

    def __init__(self, max_queue_tokens: int, max_queue_requests: int):
        self.max_queue_tokens = int(max_queue_tokens)
        self.max_queue_requests = int(max_queue_requests)
        self.tokens = 0
        self.requests = 0
        self._tokens_per_s = 0.0  # exponential moving average

    def acquire(self, tokens: int) -> None:
        """Admit a job of `tokens` estimated tokens, or raise :class:`QueueFullError` past the bound."""
        if self.requests > 0 and (
            self.tokens + tokens > self.max_queue_tokens or self.requests + 1 > self.max_queue_requests
        ):
            raise QueueFullError(self.retry_after(), "queued work is over the server's bound; retry later")
        self.tokens += tokens
        self.requests += 1

    def release(self, tokens: int) -> None:
        """A job admitted with `tokens` has finished (or failed): its share of the bound is free again."""
        self.tokens = max(0, self.tokens - tokens)
        self.requests = max(0, self.requests - 1)

    def observe(self, tokens: int, seconds: float) -> None:
        """A model call scored `tokens` in `seconds`: updates the throughput behind ``Retry-After``."""
        if seconds <= 0:
            return
        rate = tokens / seconds
        self._tokens_per_s = rate if self._tokens_per_s == 0 else 0.8 * self._tokens_per_s + 0.2 * rate

    def retry_after(self) -> int:
        """Seconds until the work in flight should be done at the measured rate (1 to 60)."""
        if self._tokens_per_s <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self.tokens / self._tokens_per_s))))


# ----------------------------------------------------------------------------------------------
# Execution (runs in the model worker thread)


def truncate_to_tokens(reranker: Any, text: str, max_tokens: int | None) -> str:
    """Cut ``text`` to its first ``max_tokens`` sub-word tokens (Cohere ``max_tokens_per_doc``), counted as the
    scorer counts a passage's tokens (special-token strings are plain text).

    Costs no more than tokenising ``max_tokens`` tokens' worth of characters, whatever the length of ``text``,
    and never asks the tokenizer to truncate (a fast tokenizer keeps that setting in its shared backend)."""
    if not max_tokens or len(text) <= max_tokens:  # a token has >= 1 character
        return text
    # A bi-encoder reads passages with its label encoder's tokenizer: count the tokens that one sees.
    return (getattr(reranker, "label_pieces", None) or reranker.pieces).label_prefix(text, max_tokens)


def _prepare_passages(reranker: Any, job: Job) -> list[str]:
    if job.max_tokens_per_doc:
        return [truncate_to_tokens(reranker, p, job.max_tokens_per_doc) for p in job.passages]
    return job.passages


def calibrate(reranker: Any) -> tuple[int, float]:
    """Time one representative listwise job (after ``warm_up()``): (its estimated tokens, seconds).

    Seeds the throughput behind ``Retry-After`` before the first real batch has been measured."""
    words = " ".join(["calibration"] * 120)
    job = Job(LISTWISE, query="calibration query", passages=[words] * 8,
              max_text_tokens=getattr(reranker, "max_length", None))
    t0 = time.perf_counter()
    run_listwise(reranker, [job])
    return job.tokens, time.perf_counter() - t0


class ShuttingDownError(Exception):
    """A job that could not finish before the server's shutdown deadline."""


class ModelThread(concurrent.futures.Executor):
    """One daemon worker thread that runs every model call, in order.

    Daemon, unlike ``ThreadPoolExecutor``'s workers (which the interpreter joins at exit): a shutdown past
    its grace period must not wait for a batch that is still running."""

    def __init__(self, name: str = "gliclass-model"):
        self._queue: "queue.SimpleQueue[tuple[concurrent.futures.Future, Callable, tuple] | None]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        self.busy = False

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            self.busy = True
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)
            finally:
                self.busy = False

    def submit(self, fn, /, *args, **kwargs):  # noqa: D102 - concurrent.futures.Executor's
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, (lambda: fn(*args, **kwargs)) if kwargs else fn, () if kwargs else args))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:  # noqa: D102
        self._queue.put(None)
        if wait:
            self._thread.join()


def run_listwise(reranker: Any, jobs: Sequence[Job]) -> list[Any]:
    """Run listwise jobs in one ``rerank_batch`` call.  Returns, per job, either its list of
    ``RerankResult`` (sorted by score) or the exception that job raised.  If the shared call
    fails, each job is retried on its own so one bad request cannot fail its neighbours."""
    if not jobs:
        return []
    queries = [j.query for j in jobs]
    passages = [_prepare_passages(reranker, j) for j in jobs]
    try:
        if len(jobs) == 1:
            return [reranker.rerank(queries[0], passages[0], mode="listwise")]
        return list(reranker.rerank_batch(queries, passages, mode="listwise"))
    except Exception as exc:  # noqa: BLE001
        if len(jobs) == 1:
            return [exc]
        logger.warning("shared batch of %d failed (%r); running its jobs one by one", len(jobs), exc)
        return [run_listwise(reranker, [j])[0] for j in jobs]


def run_nli(reranker: Any, jobs: Sequence[Job]) -> list[Any]:
    """Run NLI jobs in one ``entailment`` call: every job's premises are concatenated and each
    premise carries its own job's hypotheses.  Returns, per job, a ``scores[i][j]`` matrix
    (premise i, hypothesis j) or the exception."""
    if not jobs:
        return []
    premises: list[str] = []
    hyps: list[list[str]] = []
    for j in jobs:
        premises.extend(j.passages)
        hyps.extend([list(j.hypotheses)] * len(j.passages))
    try:
        if len(jobs) == 1:
            flat = reranker.entailment(jobs[0].passages, list(jobs[0].hypotheses))
        else:
            flat = reranker.entailment(premises, hyps)
    except Exception as exc:  # noqa: BLE001
        if len(jobs) == 1:
            return [exc]
        return [run_nli(reranker, [j])[0] for j in jobs]
    out, start = [], 0
    for j in jobs:
        out.append([list(map(float, row)) for row in flat[start : start + len(j.passages)]])
        start += len(j.passages)
    return out


RUNNERS: dict[str, Callable[[Any, Sequence[Job]], list[Any]]] = {LISTWISE: run_listwise, NLI: run_nli}


# ----------------------------------------------------------------------------------------------
# The batcher


class Batcher:
    """A small dynamic batcher: FIFO per kind, closes a batch on a token budget or a short wait,
    runs one batch at a time in a single model thread.

    ``on_batch(kind, n_jobs, tokens, seconds)`` is called after each batch (metrics hook).
    Set ``max_batch_requests=1`` to switch cross-request batching off."""

    def __init__(
        self,
        reranker: Any,
        *,
        max_batch_tokens: int = 8192,
        batch_wait_ms: float = 5.0,
        max_batch_requests: int = 64,
        on_batch: Callable[[str, int, int, float], None] | None = None,
        executor: concurrent.futures.Executor | None = None,
    ):
        self.reranker = reranker
        self.max_batch_tokens = int(max_batch_tokens)
        self.batch_wait_s = max(0.0, float(batch_wait_ms) / 1000.0)
        self.max_batch_requests = max(1, int(max_batch_requests))
        self.on_batch = on_batch
        self._own_executor = executor is None
        self.executor = executor or ModelThread()
        self._pending: dict[str, list[Job]] = {LISTWISE: [], NLI: []}
        self._running: list[Job] = []
        self._aborted = False
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="gliclass-batcher")

    async def stop(self) -> None:
        """Finish every queued job, then stop (used at shutdown, after uvicorn drained requests).
        After :meth:`abort` it returns at once: a batch still running is left to its daemon thread."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            if self._aborted:
                self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            finally:
                self._task = None
        if self._own_executor:
            self.executor.shutdown(wait=not self._aborted)

    def abort(self, reason: str) -> int:
        """Fail every queued and running job with :class:`ShuttingDownError` (their requests are answered
        now) and take no more work. Returns how many jobs were failed."""
        self._aborted = self._closing = True
        failed = 0
        for job in [j for q in self._pending.values() for j in q] + self._running:
            if job.future is not None and not job.future.done():
                job.future.set_exception(ShuttingDownError(reason))
                failed += 1
        for q in self._pending.values():
            q.clear()
        if self._wakeup is not None:
            self._wakeup.set()
        return failed

    # -- API -----------------------------------------------------------------------------------
    async def submit(self, job: Job) -> Any:
        """Queue ``job`` and wait for its result.  Cancelling the awaiting task (client gone)
        removes a job that has not started; a started job finishes and its result is dropped."""
        if self._aborted:
            raise ShuttingDownError("the server is shutting down")
        if self._task is None:
            self.start()
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        job.enqueued_at = time.monotonic()
        self._pending[job.kind].append(job)
        self._wakeup.set()
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            queue = self._pending[job.kind]
            if job in queue:
                queue.remove(job)
            if not job.future.done():
                job.future.cancel()
            raise

    # -- internals -----------------------------------------------------------------------------
    def _oldest_kind(self) -> str | None:
        kinds = [k for k, q in self._pending.items() if q]
        if not kinds:
            return None
        return min(kinds, key=lambda k: self._pending[k][0].enqueued_at)

    def _take(self, kind: str) -> list[Job]:
        queue = self._pending[kind]
        batch: list[Job] = []
        tokens = 0
        while queue and len(batch) < self.max_batch_requests:
            job = queue[0]
            if batch and tokens + job.tokens > self.max_batch_tokens:
                break
            queue.pop(0)
            if job.future is not None and job.future.done():  # cancelled while queued
                continue
            batch.append(job)
            tokens += job.tokens
        return batch

    def _ready(self, kind: str) -> bool:
        queue = self._pending[kind]
        if len(queue) >= self.max_batch_requests:
            return True
        return sum(j.tokens for j in queue) >= self.max_batch_tokens

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            kind = self._oldest_kind()
            if kind is None:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # wait (a few ms) for neighbours unless the batch is already full
            if self.max_batch_requests > 1 and self.batch_wait_s > 0 and not self._closing:
                deadline = self._pending[kind][0].enqueued_at + self.batch_wait_s
                while not self._ready(kind):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                    kind = self._oldest_kind() or kind
            batch = self._take(kind)
            if not batch:
                continue
            tokens = sum(j.tokens for j in batch)
            t0 = time.perf_counter()
            self._running = batch
            try:
                results = await loop.run_in_executor(self.executor, RUNNERS[kind], self.reranker, batch)
            except Exception as exc:  # noqa: BLE001 - executor failure: fail the batch, keep serving
                results = [exc] * len(batch)
            finally:
                self._running = []
            seconds = time.perf_counter() - t0
            for job, res in zip(batch, results):
                if job.future is None or job.future.done():
                    continue
                if isinstance(res, BaseException):
                    job.future.set_exception(res)
                else:
                    job.future.set_result(res)
            if self.on_batch is not None:
                try:
                    self.on_batch(kind, len(batch), tokens, seconds)
                except Exception:  # noqa: BLE001
                    logger.exception("on_batch hook failed")
