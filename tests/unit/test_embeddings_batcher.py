"""The dynamic batcher with a scripted engine: grouping, splitting, bounds, errors, cancellation.

``FakeEmbeddingEngine`` is also used by the HTTP tests (test_embeddings_http.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from labs_api.compute import CPU_WORK
from labs_api.engines.embedding.base import (
    EmbeddingEngine,
    EmbeddingTask,
    InputTooLongError,
    TokenCount,
    cosine_matrix,
    normalize_rows,
    shorten,
)
from labs_api.engines.embedding.batcher import (
    BatcherClosedError,
    BatcherOverloadedError,
    EmbeddingBatcher,
)

PROMPTS = {"query": "query:", "document": "", "similarity": "query:"}


class FakeEmbeddingEngine(EmbeddingEngine):
    """A bag of hashed words: texts sharing words point the same way. One word = one token;
    the model adds 2 special tokens and, for queries, a one-word prompt."""

    def __init__(self, model_id: str = "fake-embed", dimensions: int = 16,
                 max_input_tokens: int = 12) -> None:
        self.model_id = model_id
        self.dimensions = dimensions
        self.max_input_tokens = max_input_tokens
        self.calls: list[tuple[list[str], EmbeddingTask]] = []
        self.threads: set[str] = set()
        self.prepared_on: str | None = None
        self.gate = threading.Event()
        self.gate.set()  # clear() to hold the next call until set() again
        self.entered = threading.Event()  # set when a call starts
        self.fail_with: Exception | None = None
        self.closed = False
        self.cpu_work_seen: list[int] = []  # CPU_WORK.active during each call

    def vector(self, text: str, task: EmbeddingTask = "document") -> np.ndarray:
        words = (PROMPTS[task].split() + text.lower().split()) or [""]
        out = np.full(self.dimensions, 0.05, dtype=np.float32)  # dense: no zero prefix
        for word in words:
            digest = hashlib.sha256(word.encode()).digest()
            out[digest[0] % self.dimensions] += 1.0 + digest[1] / 255
        return normalize_rows(out[None, :])[0]

    def count_tokens(self, texts: Sequence[str], task: EmbeddingTask) -> list[TokenCount]:
        extra = 2 + len(PROMPTS[task].split())
        return [TokenCount(text=len(t.split()), model=len(t.split()) + extra) for t in texts]

    def embed(self, texts: Sequence[str], task: EmbeddingTask) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.cpu_work_seen.append(CPU_WORK.active)
        self.entered.set()
        self.gate.wait(timeout=10)
        self.calls.append((list(texts), task))
        if self.fail_with is not None:
            raise self.fail_with
        return np.stack([self.vector(t, task) for t in texts])

    def prepare_thread(self) -> None:
        self.prepared_on = threading.current_thread().name

    def close(self) -> None:
        self.closed = True


def make(engine: FakeEmbeddingEngine | None = None, **kwargs) -> tuple[EmbeddingBatcher,
                                                                         FakeEmbeddingEngine]:
    engine = engine or FakeEmbeddingEngine()
    kwargs.setdefault("warm_up", False)
    kwargs.setdefault("max_wait", 0.0)
    return EmbeddingBatcher(engine, **kwargs), engine


async def hold_worker(engine: FakeEmbeddingEngine, batcher: EmbeddingBatcher) -> asyncio.Task:
    """Start a one-text request and wait until the worker is stuck inside it."""
    engine.gate.clear()
    engine.entered.clear()
    task = asyncio.ensure_future(batcher.embed(["blocker"], "document"))
    while not engine.entered.is_set():
        await asyncio.sleep(0.005)
    return task


def sizes(engine: FakeEmbeddingEngine) -> list[int]:
    return [len(texts) for texts, _ in engine.calls]


def test_concurrent_requests_share_model_calls_and_get_their_own_vectors():
    async def scenario():
        batcher, engine = make(batch_size=8)
        blocker = await hold_worker(engine, batcher)
        texts = [f"sentence number {i}" for i in range(20)]
        jobs = [asyncio.ensure_future(batcher.embed([t], "document")) for t in texts]
        await asyncio.sleep(0.05)
        assert batcher.waiting == 20
        engine.gate.set()
        results = await asyncio.gather(*jobs)
        await blocker
        batcher.close()
        return engine, texts, results

    engine, texts, results = asyncio.run(scenario())
    assert sizes(engine) == [1, 8, 8, 4]  # 20 requests, 3 model calls after the first
    for text, result in zip(texts, results, strict=True):
        np.testing.assert_allclose(result.vectors[0], engine.vector(text), atol=1e-7)
        assert result.tokens == [TokenCount(text=3, model=5)]


def test_a_large_request_is_split_into_bounded_batches_in_order():
    async def scenario():
        batcher, engine = make(batch_size=8)
        texts = [f"text {i} " + "word " * (i % 3) for i in range(21)]
        result = await batcher.embed(texts, "document")
        batcher.close()
        return engine, texts, result

    engine, texts, result = asyncio.run(scenario())
    assert sizes(engine) == [8, 8, 5]
    assert [t for call, _ in engine.calls for t in call] == texts
    expected = np.stack([engine.vector(t) for t in texts])
    np.testing.assert_allclose(result.vectors, expected, atol=1e-7)
    assert [c.text for c in result.tokens] == [len(t.split()) for t in texts]


def test_a_small_request_shares_the_very_next_batch_with_a_large_one():
    async def scenario():
        batcher, engine = make(batch_size=8)
        blocker = await hold_worker(engine, batcher)
        large = asyncio.ensure_future(batcher.embed([f"big {i}" for i in range(10)], "document"))
        small = asyncio.ensure_future(batcher.embed(["small one"], "document"))
        await asyncio.sleep(0.05)
        engine.gate.set()
        await asyncio.gather(blocker, large, small)
        batcher.close()
        return engine

    engine = asyncio.run(scenario())
    assert sizes(engine) == [1, 8, 3]
    # Fair shares: the small request does not wait behind the whole large one.
    assert engine.calls[1][0] == [f"big {i}" for i in range(7)] + ["small one"]
    assert engine.calls[2][0] == ["big 7", "big 8", "big 9"]


def test_tasks_are_never_mixed_in_one_call():
    async def scenario():
        batcher, engine = make(batch_size=8)
        blocker = await hold_worker(engine, batcher)
        jobs = [asyncio.ensure_future(batcher.embed([f"t{i}"], "query" if i % 2 else "document"))
                for i in range(6)]
        await asyncio.sleep(0.05)
        engine.gate.set()
        results = await asyncio.gather(*jobs)
        await blocker
        batcher.close()
        return engine, results

    engine, results = asyncio.run(scenario())
    assert sorted(sizes(engine)) == [1, 3, 3]
    for texts, task in engine.calls[1:]:
        assert {int(t[1:]) % 2 for t in texts} == ({1} if task == "query" else {0})
    np.testing.assert_allclose(results[1].vectors[0], engine.vector("t1", "query"), atol=1e-7)


def test_a_lone_request_waits_at_most_max_wait_and_a_full_batch_not_at_all():
    async def scenario():
        batcher, engine = make(batch_size=4, max_wait=0.3)
        started = time.perf_counter()
        await batcher.embed(["alone"], "document")
        alone = time.perf_counter() - started
        started = time.perf_counter()
        await asyncio.gather(*(batcher.embed([f"t{i}"], "document") for i in range(4)))
        full = time.perf_counter() - started
        batcher.close()
        return engine, alone, full

    engine, alone, full = asyncio.run(scenario())
    assert 0.25 <= alone < 5, alone
    assert full < 0.2, full  # four texts fill the batch: no waiting for more
    assert sizes(engine) == [1, 4]


def test_past_the_queue_bound_requests_are_refused_with_a_retry_estimate():
    async def scenario():
        batcher, engine = make(batch_size=4, max_queue=10)
        blocker = await hold_worker(engine, batcher)
        queued = [asyncio.ensure_future(batcher.embed([f"q{i}"] * 5, "document"))
                  for i in range(2)]
        await asyncio.sleep(0.02)
        assert batcher.waiting == 10
        with pytest.raises(BatcherOverloadedError) as refused:
            await batcher.embed(["one too many"], "document")
        engine.gate.set()
        await asyncio.gather(blocker, *queued)
        after = await batcher.embed(["fits again"], "document")  # the queue drained
        batcher.close()
        return refused.value, after

    refused, after = asyncio.run(scenario())
    assert refused.retry_after >= 1
    assert "10 inputs waiting" in str(refused) and "at most 10" in str(refused)
    assert after.vectors.shape == (1, 16)


def test_an_oversized_request_is_accepted_when_nothing_waits():
    async def scenario():
        batcher, engine = make(batch_size=4, max_queue=3)
        result = await batcher.embed([f"x{i}" for i in range(7)], "document")
        batcher.close()
        return result

    assert asyncio.run(scenario()).vectors.shape == (7, 16)


def test_too_long_inputs_are_refused_without_harming_their_batch_mates():
    async def scenario():
        batcher, engine = make(batch_size=8)
        blocker = await hold_worker(engine, batcher)
        bad = asyncio.ensure_future(batcher.embed(["short", "word " * 11], "document"))
        good = asyncio.ensure_future(batcher.embed(["fine text"], "document"))
        await asyncio.sleep(0.02)
        engine.gate.set()
        await blocker
        with pytest.raises(InputTooLongError) as too_long:
            await bad
        result = await good
        batcher.close()
        return engine, too_long.value, result

    engine, too_long, result = asyncio.run(scenario())
    assert (too_long.index, too_long.tokens, too_long.limit) == (1, 13, 12)
    assert engine.calls[-1][0] == ["fine text"]  # the refused request never reached the model
    assert result.vectors.shape == (1, 16)


def test_with_truncation_on_long_inputs_are_embedded_and_usage_counts_what_was_read():
    async def scenario():
        batcher, engine = make(truncate=True)
        result = await batcher.embed(["word " * 30, "two words"], "query")
        batcher.close()
        return result

    result = asyncio.run(scenario())
    # limit 12 = 2 special + 1 prompt + 9 text tokens
    assert result.tokens == [TokenCount(text=9, model=12), TokenCount(text=2, model=5)]


def test_an_engine_failure_fails_that_batch_only():
    async def scenario():
        batcher, engine = make()
        engine.fail_with = RuntimeError("out of memory")
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.embed(["doomed"], "document")
        engine.fail_with = None
        result = await batcher.embed(["fine"], "document")
        batcher.close()
        return result

    assert asyncio.run(scenario()).vectors.shape == (1, 16)


def test_a_cancelled_request_is_not_embedded():
    async def scenario():
        batcher, engine = make(batch_size=8)
        blocker = await hold_worker(engine, batcher)
        doomed = asyncio.ensure_future(batcher.embed(["never embedded"], "document"))
        kept = asyncio.ensure_future(batcher.embed(["embedded"], "document"))
        await asyncio.sleep(0.02)
        doomed.cancel()
        await asyncio.sleep(0.02)
        assert batcher.waiting == 1
        engine.gate.set()
        await asyncio.gather(blocker, kept)
        batcher.close()
        return engine

    engine = asyncio.run(scenario())
    assert all("never embedded" not in texts for texts, _ in engine.calls)


def test_the_model_runs_on_one_worker_thread_prepared_first_and_warmed_up():
    async def scenario():
        batcher, engine = make(warm_up=True)
        await asyncio.gather(*(batcher.embed([f"t{i}"], "document") for i in range(5)))
        batcher.close()
        return engine

    engine = asyncio.run(scenario())
    assert engine.calls[0] == (["warm up"], "document")
    assert len(engine.threads) == 1 and engine.prepared_on in engine.threads
    assert threading.current_thread().name not in engine.threads
    # Every model call is announced to the chat scheduler, which then leaves a core free.
    assert len(engine.cpu_work_seen) == len(engine.calls) and min(engine.cpu_work_seen) >= 1
    assert CPU_WORK.active == 0


def test_close_refuses_new_work_fails_waiting_work_and_closes_the_engine():
    async def scenario():
        batcher, engine = make()
        blocker = await hold_worker(engine, batcher)
        waiting = asyncio.ensure_future(batcher.embed(["waiting"], "document"))
        await asyncio.sleep(0.02)
        closer = threading.Thread(target=batcher.close)
        closer.start()
        with pytest.raises(BatcherClosedError):
            await waiting
        engine.gate.set()
        await blocker  # the call in progress still finishes
        closer.join()
        with pytest.raises(BatcherClosedError):
            await batcher.embed(["late"], "document")
        return engine

    assert asyncio.run(scenario()).closed


def test_shorten_keeps_a_prefix_and_renormalises():
    vectors = normalize_rows(np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32))
    short = shorten(vectors, 8)
    assert short.shape == (3, 8) and short.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)
    cos = (short * vectors[:, :8]).sum(axis=1) / np.linalg.norm(vectors[:, :8], axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)  # same direction as the prefix
    assert shorten(vectors, 32) is vectors


def test_cosine_matrix_is_symmetric_with_a_unit_diagonal():
    vectors = np.random.default_rng(1).normal(size=(7, 24)).astype(np.float32)
    matrix = cosine_matrix(vectors)
    assert matrix.shape == (7, 7)
    assert (matrix == matrix.T).all() and (np.diag(matrix) == 1.0).all()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(matrix, unit @ unit.T, atol=1e-6)
    assert matrix.max() <= 1.0 and matrix.min() >= -1.0


def test_an_engine_returning_the_wrong_shape_fails_the_batch_instead_of_hanging():
    class Broken(FakeEmbeddingEngine):
        def embed(self, texts, task):
            return super().embed(texts, task)[:1]  # one row, whatever was asked

    async def scenario():
        batcher, engine = make(Broken())
        with pytest.raises(RuntimeError, match="returned"):
            await asyncio.wait_for(batcher.embed(["a", "b"], "document"), timeout=5)
        result = await batcher.embed(["single"], "document")  # the worker is still alive
        batcher.close()
        return result

    assert asyncio.run(scenario()).vectors.shape == (1, 16)
