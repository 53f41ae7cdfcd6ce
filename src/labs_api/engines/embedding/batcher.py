"""Dynamic batching: concurrent requests share model calls on one worker thread.

Every request's texts join one queue. The worker thread takes up to ``batch_size`` texts of the
same task at a time - from as many requests as it takes, splitting large ones, and sharing the
batch fairly between requests (a one-sentence request that arrives while a 2048-input one runs
goes into the very next batch instead of waiting for all of it) - waiting at most
``max_wait`` after the oldest of them arrived for others to join, and runs one ``embed`` call.
While a call runs, new requests pile up and go together into the next one, so 64 clients with one
sentence each cost about what one request of 64 sentences costs.

The queue is bounded (in texts): past ``max_queue`` waiting texts a request is refused at once
with ``BatcherOverloadedError`` rather than waiting behind an ever longer line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from labs_api.compute import CPU_WORK
from labs_api.engines.embedding.base import (
    EmbeddingEngine,
    EmbeddingTask,
    InputTooLongError,
    TokenCount,
)
from labs_api.engines.progress import PROGRESS

log = logging.getLogger("labs_api.embeddings")

#: About how long one model call should last when it is big (see ``EmbeddingBatcher._room``);
#: MiniLM on 2 cores: 64 sentences in ~0.25 s quiet, twice that on a busy CPU.
BATCH_SECONDS = 0.2
MIN_BATCH = 8


class BatcherOverloadedError(RuntimeError):
    """The queue is full; ``retry_after`` is an estimate in whole seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down."""


@dataclass
class EmbeddingResult:
    vectors: np.ndarray  # (n, dimensions) float32, unit rows, in input order
    tokens: list[TokenCount]


@dataclass(eq=False)
class _Job:
    """One request's texts on their way through the queue."""

    texts: Sequence[str]
    task: EmbeddingTask
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    taken: int = 0  # texts handed to the worker so far
    finished: int = 0  # texts embedded so far
    vectors: np.ndarray | None = None
    tokens: list[TokenCount] | None = None
    failed: bool = False

    @property
    def waiting(self) -> int:
        return len(self.texts) - self.taken


class EmbeddingBatcher:
    """Wraps an engine; ``await embed(texts, task)`` from any number of coroutines."""

    def __init__(
        self,
        engine: EmbeddingEngine,
        *,
        batch_size: int = 64,
        max_wait: float = 0.005,
        max_queue: int = 4096,
        truncate: bool = False,
        warm_up: bool = True,
    ) -> None:
        if batch_size < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError("batch_size and max_queue must be >= 1, max_wait >= 0")
        self.engine = engine
        self.model_id = engine.model_id
        self.dimensions = engine.dimensions
        self.max_input_tokens = engine.max_input_tokens
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.truncate = truncate
        self.model_calls = 0  # how many engine.embed calls ran (for tests and logs)
        self._queue: collections.deque[_Job] = collections.deque()
        self._waiting = 0  # texts in the queue not yet handed to the worker
        self._rate = 0.0  # texts per second, a moving average (for Retry-After)
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, args=(warm_up,),
                                        name=f"embed-{engine.model_id}"[:60], daemon=True)
        self._thread.start()

    # ---- event-loop side ------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], task: EmbeddingTask) -> EmbeddingResult:
        """Embed ``texts`` in some shared model calls. Raises ``InputTooLongError`` (truncation
        off), ``BatcherOverloadedError`` (queue full) or what the engine raised."""
        if not texts:
            return EmbeddingResult(np.zeros((0, self.dimensions), np.float32), [])
        loop = asyncio.get_running_loop()
        job = _Job(texts=texts, task=task, loop=loop, future=loop.create_future())
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the embedding model is shutting down")
            if self._waiting and self._waiting + len(texts) > self.max_queue:
                raise BatcherOverloadedError(
                    f"The embedding queue is full ({self._waiting} inputs waiting, at most "
                    f"{self.max_queue}); retry shortly.",
                    retry_after=self._retry_after(),
                )
            self._queue.append(job)
            self._waiting += len(texts)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._drop(job)  # the client went away: do not embed the rest
            raise

    def _retry_after(self) -> int:
        if self._rate <= 0:
            return 1
        return max(1, min(60, math.ceil(self._waiting / self._rate)))

    def _drop(self, job: _Job) -> None:
        with self._cond:
            job.failed = True
            if job in self._queue:
                self._queue.remove(job)
                self._waiting -= job.waiting

    @property
    def waiting(self) -> int:
        """Texts queued and not yet handed to the model."""
        return self._waiting

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._waiting = 0
            self._cond.notify_all()
        for job in pending:
            self._fail(job, BatcherClosedError("the embedding model is shutting down"))
        self._thread.join(timeout=10)
        self.engine.close()

    # ---- worker thread ----------------------------------------------------------------------

    def _work(self, warm_up: bool) -> None:
        self.engine.prepare_thread()
        if warm_up:
            try:  # the first call initialises kernels; keep that off the first request
                with CPU_WORK.running():
                    self.engine.embed(["warm up"], "document")
            except Exception:
                log.exception("embedding warm-up failed")
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as exc:  # a bug here must not leave requests waiting forever
                log.exception("the embedding worker failed on a batch")
                for job, _, _ in batch:
                    self._fail(job, exc)

    def _next_batch(self) -> list[tuple[_Job, int, int]] | None:
        """Up to ``batch_size`` texts of the oldest job's task: (job, start, end) slices."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            # Wait for company, but never past max_wait after the oldest text arrived.
            deadline = self._queue[0].arrived + self.max_wait
            while not self._closed and self._waiting < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed or not self._queue:
                return None if self._closed else []
            task = self._queue[0].task
            jobs = [job for job in self._queue if job.task == task]
            batch: list[tuple[_Job, int, int]] = []
            for job, take in zip(jobs, fair_shares([j.waiting for j in jobs], self._room()),
                                 strict=True):
                if take == 0:
                    continue
                start = job.taken
                batch.append((job, start, start + take))
                job.taken = start + take
                self._waiting -= take
                if job.waiting == 0:
                    self._queue.remove(job)
            return batch

    def _room(self) -> int:
        """Texts in the next call: ``batch_size``, or fewer when the model is slow right now
        (a busy CPU), so that one call lasts about ``BATCH_SECONDS``: a request arriving
        meanwhile waits at most that long for its turn."""
        if self._rate <= 0:  # no measure yet: a modest first call
            return min(self.batch_size, 2 * MIN_BATCH)
        return max(MIN_BATCH, min(self.batch_size, int(self._rate * BATCH_SECONDS)))

    def _run(self, batch: list[tuple[_Job, int, int]]) -> None:
        for job, _, _ in batch:
            if job.tokens is None and not job.failed:
                self._measure(job)
        batch = [(job, start, end) for job, start, end in batch if not job.failed]
        if not batch:
            return
        texts = [text for job, start, end in batch for text in job.texts[start:end]]
        started = time.perf_counter()
        try:
            with CPU_WORK.running():  # the chat scheduler leaves us a core meanwhile
                vectors = self.engine.embed(texts, batch[0][0].task)
            if vectors.shape != (len(texts), self.dimensions):
                raise RuntimeError(f"the engine returned {vectors.shape} for {len(texts)} "
                                   f"inputs of {self.dimensions} dimensions")
        except Exception as exc:
            log.exception("embedding %d inputs failed", len(texts))
            for job, _, _ in batch:
                self._fail(job, exc)
            return
        elapsed = time.perf_counter() - started
        self.model_calls += 1
        PROGRESS.tick()  # a supervisor tells a long request from a stuck engine by this
        log.debug("embedded %d inputs of %d requests in %.1f ms", len(texts), len(batch),
                  elapsed * 1000)
        rate = len(texts) / max(elapsed, 1e-6)
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        offset = 0
        for job, start, end in batch:
            if job.vectors is None:
                job.vectors = np.empty((len(job.texts), vectors.shape[1]), dtype=np.float32)
            job.vectors[start:end] = vectors[offset:offset + end - start]
            offset += end - start
            job.finished += end - start
            if job.finished == len(job.texts):
                result = EmbeddingResult(job.vectors, job.tokens or [])
                self._settle(job, lambda f, r=result: f.set_result(r))

    def _measure(self, job: _Job) -> None:
        """Count the job's tokens once, on its first batch; refuse it if an input is too long."""
        try:
            job.tokens = self.engine.count_tokens(job.texts, job.task)
        except Exception as exc:
            self._fail(job, exc)
            return
        if self.truncate:  # the model reads (and usage counts) only what fits
            limit = self.max_input_tokens
            job.tokens = [
                TokenCount(text=max(0, min(c.text, limit - (c.model - c.text))),
                           model=min(c.model, limit))
                for c in job.tokens
            ]
            return
        for index, count in enumerate(job.tokens):
            if count.model > self.max_input_tokens:
                self._fail(job, InputTooLongError(index, count.model, self.max_input_tokens))
                return

    def _fail(self, job: _Job, exc: BaseException) -> None:
        self._drop(job)
        self._settle(job, lambda f: f.set_exception(exc))

    @staticmethod
    def _settle(job: _Job, action) -> None:
        def apply() -> None:
            if not job.future.done():
                action(job.future)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            job.loop.call_soon_threadsafe(apply)


def fair_shares(wanted: list[int], room: int) -> list[int]:
    """Split ``room`` between requests wanting ``wanted`` texts, max-min fairly: requests
    wanting less than an equal share get all they want, the rest share what is left equally
    (the oldest get the remainder)."""
    shares = [0] * len(wanted)
    for done, index in enumerate(sorted(range(len(wanted)), key=lambda i: (wanted[i], i))):
        left = len(wanted) - done
        share = min(wanted[index], room // left + (1 if room % left else 0))
        shares[index] = share
        room -= share
    return shares
