"""Cross-request batching for the rerank server.

Requests that arrive together are grouped into one call of the core
(``GLiClassReranker.rerank_batch`` for listwise jobs, ``entailment`` for NLI jobs),
so they share forward passes.  A batch closes when its estimated token count
reaches ``max_batch_tokens`` or ``batch_wait_ms`` after its oldest request
arrived, whichever comes first.

The model runs in ONE worker thread (a ``ThreadPoolExecutor(max_workers=1)``), so
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
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

logger = logging.getLogger("gliclass_rerank.server")

LISTWISE = "listwise"
NLI = "nli"


def estimate_tokens(text: str) -> int:
    """Cheap upper-ish estimate of the sub-word tokens of ``text`` (about 4 characters per token).

    Only used for batch budgets and queue bounds, never for truncation, so it must be
    cheap enough to run on the event loop."""
    return len(text) // 4 + 2


@dataclass
class Job:
    """One request's worth of work."""

    kind: str  # LISTWISE or NLI
    # listwise: query + passages; nli: premises (passages) + hypotheses (claims)
    query: str | None = None
    passages: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)
    max_tokens_per_doc: int | None = None
    tokens: int = 0
    batch_cost: int = 0  # Ray Serve's batch_size_fn reads this
    enqueued_at: float = 0.0
    future: asyncio.Future | None = None

    def __post_init__(self) -> None:
        if not self.tokens:
            if self.kind == LISTWISE:
                self.tokens = estimate_tokens(self.query or "") + sum(estimate_tokens(p) for p in self.passages)
            else:
                hyp = sum(estimate_tokens(h) for h in self.hypotheses)
                self.tokens = sum(estimate_tokens(p) + hyp for p in self.passages)


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


def truncate_to_tokens(tokenizer: Any, text: str, max_tokens: int | None) -> str:
    """Cut ``text`` to its first ``max_tokens`` sub-word tokens (Cohere ``max_tokens_per_doc``).

    Never asks the tokenizer to truncate: a fast tokenizer keeps truncation settings in its Rust
    backend, which the core reads directly, so the cut is made on the offsets instead."""
    if not max_tokens or tokenizer is None or len(text) <= max_tokens:  # a token has >= 1 character
        return text
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except Exception:  # slow tokenizers have no offsets: fall back to decode
        ids = tokenizer.encode(text, add_special_tokens=False)
        return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]


# reranker -> (its tokenizer, our copy); weak keys: a reranker that goes away takes its copy with it
_TOKENIZER_COPIES: "weakref.WeakKeyDictionary[Any, tuple[Any, Any]]" = weakref.WeakKeyDictionary()


def _private_tokenizer(reranker: Any) -> Any:
    """A copy of the reranker's tokenizer for the server's own use (the core's stays untouched)."""
    tok = getattr(reranker, "tokenizer", None)
    if tok is None:
        return None
    cached = _TOKENIZER_COPIES.get(reranker)
    if cached is not None and cached[0] is tok:
        return cached[1]
    import copy

    try:
        private = copy.deepcopy(tok)
    except Exception:  # noqa: BLE001
        private = tok
    _TOKENIZER_COPIES[reranker] = (tok, private)
    return private


def _prepare_passages(reranker: Any, job: Job) -> list[str]:
    if job.max_tokens_per_doc:
        tok = _private_tokenizer(reranker)
        return [truncate_to_tokens(tok, p, job.max_tokens_per_doc) for p in job.passages]
    return job.passages


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
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="gliclass-model"
        )
        self._pending: dict[str, list[Job]] = {LISTWISE: [], NLI: []}
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="gliclass-batcher")

    async def stop(self) -> None:
        """Finish every queued job, then stop (used at shutdown, after uvicorn drained requests)."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            try:
                await self._task
            finally:
                self._task = None
        if self._own_executor:
            self.executor.shutdown(wait=True)

    # -- API -----------------------------------------------------------------------------------
    async def submit(self, job: Job) -> Any:
        """Queue ``job`` and wait for its result.  Cancelling the awaiting task (client gone)
        removes a job that has not started; a started job finishes and its result is dropped."""
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
            try:
                results = await loop.run_in_executor(self.executor, RUNNERS[kind], self.reranker, batch)
            except Exception as exc:  # noqa: BLE001 - executor failure: fail the batch, keep serving
                results = [exc] * len(batch)
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
