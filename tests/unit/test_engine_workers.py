"""The engine-worker supervisor on fake engines in real child processes: calls and streams
cross the process boundary intact, a crash or a stall costs only the requests in hand, the
worker comes back, and a request that crashed it twice is refused."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

from labs_api.engines.chat.base import ChatMessage, SamplingParams
from labs_api.engines.errors import EngineFailed, EngineUnavailable, InvalidRequest, PromptTooLong
from labs_api.engines.remote import RemoteChatEngine, RemoteEmbeddingBatcher
from labs_api.workers.supervisor import EngineWorker, WorkerOptions
from tests import worker_fakes
from tests.worker_fakes import BLOCK, CRASH, HANG

PARAMS = SamplingParams(max_tokens=16, temperature=0.0, top_p=1.0)
FAST = WorkerOptions(stall_seconds=2.0, first_backoff_s=0.1, stable_after_s=60.0)


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage("user", text)]


async def start_chat(options: WorkerOptions = FAST) -> tuple[EngineWorker, RemoteChatEngine]:
    states: list[str] = []
    worker = EngineWorker("fake-chat", "chat", functools.partial(worker_fakes.load_trouble_chat),
                          options, on_state=lambda state, error: states.append(state))
    worker.states = states  # type: ignore[attr-defined]
    engine = RemoteChatEngine(worker, await worker.start())
    worker.on_attributes(engine.update)
    return worker, engine


async def answer(engine: RemoteChatEngine, text: str) -> str:
    prompt = await engine.prompt_tokens(ask(text))
    pieces = [chunk.text async for chunk in engine.stream_prompt(prompt, PARAMS)]
    return "".join(pieces)


async def wait_ready(worker: EngineWorker, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while worker.state != "ready":
        assert time.monotonic() - started < timeout, f"worker still {worker.state}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def expect_error(engine: RemoteChatEngine, text: str) -> BaseException:
    prompt = await engine.prompt_tokens(ask(text))
    stream = engine.stream_prompt(prompt, PARAMS)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the type is checked by callers
        async for _ in stream:
            pass
    return raised.value


def test_calls_and_streams_cross_the_boundary_intact():
    async def scenario():
        worker, engine = await start_chat()
        try:
            assert engine.model_id == "fake-chat" and engine.context_length == 64
            assert worker.pid is not None
            tokens = await engine.prompt_tokens(ask("one two three"))
            text = await answer(engine, "hello")
            with pytest.raises(PromptTooLong) as too_long:
                await answer(engine, "word " * 100)
            return tokens, text, too_long.value
        finally:
            await worker.close()

    tokens, text, too_long = asyncio.run(scenario())
    assert tokens == [0, 1, 2]
    assert text == "Hello there, how are you?"
    assert "64" in too_long.message  # the engine's own error, rebuilt with its message


def test_one_message_carries_the_tokens_of_many_streams():
    async def scenario():
        worker = EngineWorker("fake-chat", "chat",
                              functools.partial(worker_fakes.load_trouble_chat, delay=0.01),
                              FAST)
        engine = RemoteChatEngine(worker, await worker.start())
        try:
            texts = await asyncio.gather(*(answer(engine, f"question {i}") for i in range(8)))
            await asyncio.sleep(1.2)  # a heartbeat brings the worker's counts
            return texts, worker.frames, worker.events
        finally:
            await worker.close()

    texts, frames, events = asyncio.run(scenario())
    assert texts == ["Hello there, how are you?"] * 8
    # 8 streams x 6 events each arrive in far fewer messages than events.
    assert events >= 48 and frames < events / 2, (frames, events)


def test_a_crash_fails_the_requests_in_hand_and_the_worker_comes_back():
    async def scenario():
        worker, engine = await start_chat()
        try:
            pid = worker.pid
            bystander = asyncio.create_task(answer(engine, "slow " * 3))
            error = await expect_error(engine, f"please {CRASH} now")
            refused_while_down = None
            try:
                await answer(engine, "hello")
            except EngineUnavailable as exc:
                refused_while_down = exc
            back_after = await wait_ready(worker)
            after = await answer(engine, "hello again")
            await asyncio.gather(bystander, return_exceptions=True)
            return error, pid, worker.pid, worker.restarts, after, back_after, worker.states, \
                refused_while_down
        finally:
            await worker.close()

    error, pid, new_pid, restarts, after, back_after, states, refused = asyncio.run(scenario())
    assert isinstance(error, EngineUnavailable)
    assert error.code == "engine_restarting" and error.retry_after >= 1
    assert "SIGSEGV" in error.message
    assert new_pid != pid and restarts == 1
    assert after == "Hello there, how are you?"
    assert back_after < 10
    assert states[:3] == ["ready", "restarting", "ready"]
    if refused is not None:  # a request while it restarts is told so, not queued forever
        assert refused.code == "engine_restarting"


def test_a_request_that_crashed_the_worker_twice_is_refused():
    async def scenario():
        worker, engine = await start_chat()
        try:
            first = await expect_error(engine, CRASH)
            await wait_ready(worker)
            second = await expect_error(engine, CRASH)
            await wait_ready(worker)
            with pytest.raises(InvalidRequest) as third:
                await answer(engine, CRASH)
            other = await answer(engine, "something else")
            return first, second, third.value, other, worker.restarts
        finally:
            await worker.close()

    first, second, third, other, restarts = asyncio.run(scenario())
    assert isinstance(first, EngineUnavailable)
    assert isinstance(second, EngineFailed) and second.code == "request_crashed_engine"
    assert third.code == "request_crashed_engine" and "twice" in third.message
    assert other == "Hello there, how are you?"
    assert restarts == 2


@pytest.mark.parametrize("trouble", [HANG, BLOCK])
def test_a_worker_that_makes_no_progress_is_killed_and_restarted(trouble):
    """HANG: the worker's loop runs (heartbeats) but its engine never advances; BLOCK: the
    loop itself is stuck, so not even heartbeats come."""

    async def scenario():
        worker, engine = await start_chat()
        try:
            started = time.monotonic()
            error = await expect_error(engine, trouble)
            waited = time.monotonic() - started
            await wait_ready(worker)
            return error, waited, await answer(engine, "hello"), worker.last_exit
        finally:
            await worker.close()

    error, waited, after, last_exit = asyncio.run(scenario())
    assert isinstance(error, EngineUnavailable) and error.code == "engine_restarting"
    assert "no progress for 2 s" in error.message and "no progress" in last_exit
    assert 2.0 <= waited < 8.0
    assert after == "Hello there, how are you?"


def test_an_idle_worker_is_never_taken_for_a_stalled_one():
    async def scenario():
        worker, engine = await start_chat(WorkerOptions(stall_seconds=1.0))
        try:
            await asyncio.sleep(2.5)  # idle longer than the stall limit
            return await answer(engine, "hello"), worker.restarts
        finally:
            await worker.close()

    assert asyncio.run(scenario()) == ("Hello there, how are you?", 0)


def test_a_killed_embedding_worker_fails_its_call_then_serves_again():
    async def scenario():
        worker = EngineWorker("fake-embed", "embedding", worker_fakes.load_fake_embeddings, FAST)
        batcher = RemoteEmbeddingBatcher(worker, await worker.start())
        try:
            vectors = await batcher.embed(["ab", "abcd"], "document")
            with pytest.raises(EngineUnavailable) as killed:
                await batcher.embed([CRASH], "document")
            await wait_ready(worker)
            again = await batcher.embed(["abc"], "document")
            return vectors, killed.value, again
        finally:
            await worker.close()

    vectors, killed, again = asyncio.run(scenario())
    assert vectors[:, 0].tolist() == [2.0, 4.0] and vectors.dtype.name == "float32"
    assert "SIGKILL" in killed.message
    assert again[:, 0].tolist() == [3.0]


def test_a_load_failure_is_the_engines_own_error():
    async def scenario():
        worker = EngineWorker("broken", "chat", worker_fakes.load_broken, FAST)
        with pytest.raises(FileNotFoundError) as raised:
            await worker.start()
        return raised.value

    assert "/nowhere/model.gguf" in str(asyncio.run(scenario()))
