"""Continuous batching on the bundled GGUF: correctness under concurrency, cancellation,
back-pressure and prompt-prefix reuse. Timing figures live in benchmarks/, not here."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

import httpx
import pytest

from labs_api.engines.chat.base import ChatMessage, SamplingParams
from labs_api.engines.chat.factory import bundled_gguf_path
from labs_api.engines.chat.llama_cpp_engine import LlamaCppChatEngine, LlamaCppOptions
from labs_api.engines.errors import EngineBusy
from tests.e2e.server import running_server

GREEDY = SamplingParams(max_tokens=48, temperature=0.0, top_p=1.0)
PROMPTS = [f"Write two sentences about the number {i}." for i in range(8)]


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage("user", text)]


@pytest.fixture(scope="module")
def engine():
    engine = LlamaCppChatEngine("smol", bundled_gguf_path(),
                                LlamaCppOptions(slots=4, max_waiting=8, context_per_slot=1024))
    yield engine
    engine.close()


async def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


@pytest.fixture(scope="module")
def separate_streams_engine():
    """KV streams per slot (LABS_KV_UNIFIED=false): each sequence's attention sees only its
    own cells, laid out from cell 0, so batching cannot change its numbers. (With the shared
    cache, the default, the cells' layout changes the float rounding of attention, and a
    greedy answer may differ once batched.)"""
    engine = LlamaCppChatEngine("smol", bundled_gguf_path(), LlamaCppOptions(
        slots=4, max_waiting=8, context_per_slot=1024, unified_kv=False))
    yield engine
    engine.close()


def test_each_of_8_concurrent_greedy_requests_equals_its_solo_run(separate_streams_engine):
    engine = separate_streams_engine

    async def scenario():
        alone = [await engine.generate(ask(p), GREEDY) for p in PROMPTS]
        together = await asyncio.gather(*(engine.generate(ask(p), GREEDY) for p in PROMPTS))
        return alone, together

    alone, together = asyncio.run(scenario())
    assert len({a.text for a in alone}) == len(PROMPTS)  # the prompts give different answers
    for solo, batched in zip(alone, together, strict=True):
        assert batched.text == solo.text
        assert batched.completion_tokens == solo.completion_tokens
        assert batched.finish_reason == solo.finish_reason


def test_a_mix_of_sampling_parameters_in_one_batch_keeps_each_requests_own(
        separate_streams_engine):
    engine = separate_streams_engine  # the greedy one is compared with its solo run

    async def scenario():
        greedy = engine.generate(ask(PROMPTS[0]), GREEDY)
        short = engine.generate(ask(PROMPTS[1]), SamplingParams(max_tokens=3, temperature=0.9,
                                                                top_p=0.9, seed=3))
        stopped = engine.generate(ask("Count from 1 to 10."),
                                  SamplingParams(max_tokens=40, temperature=0, top_p=1,
                                                 stop=("4",)))
        return await asyncio.gather(greedy, short, stopped)

    greedy, short, stopped = asyncio.run(scenario())
    solo = asyncio.run(engine.generate(ask(PROMPTS[0]), GREEDY))
    assert greedy.text == solo.text
    assert short.completion_tokens == 3 and short.finish_reason == "length"
    assert stopped.finish_reason == "stop" and "4" not in stopped.text and "3" in stopped.text


def test_closing_a_stream_frees_its_slot_within_a_step(engine):
    async def scenario():
        stream = engine.stream(ask("Tell me a very long story."),
                               SamplingParams(max_tokens=900, temperature=0, top_p=1))
        received = [await anext(stream) for _ in range(3)]
        assert engine.scheduler.active_count() == 1
        await stream.aclose()
        freed = await wait_until(lambda: engine.scheduler.active_count() == 0, timeout=2.0)
        return received, freed

    received, freed = asyncio.run(scenario())
    assert all(chunk.text for chunk in received)
    assert freed


def test_a_follow_up_turn_reuses_the_cached_prompt_prefix(engine):
    first_turn = [ChatMessage("system", "You are a terse assistant. " * 20),
                  ChatMessage("user", "Name a fruit.")]

    async def scenario():
        reply = await engine.generate(first_turn, GREEDY)
        before = engine.scheduler.reused_prompt_tokens
        follow_up = [*first_turn, ChatMessage("assistant", reply.text),
                     ChatMessage("user", "And a vegetable?")]
        await engine.generate(follow_up, GREEDY)
        return before, engine.scheduler.reused_prompt_tokens

    before, after = asyncio.run(scenario())
    first_prompt = len(engine.tokenize_prompt(first_turn))
    assert after - before >= first_prompt - 1


def test_the_queue_bound_answers_503_at_once():
    engine = LlamaCppChatEngine("smol", bundled_gguf_path(),
                                LlamaCppOptions(slots=1, max_waiting=1, context_per_slot=512))
    long = SamplingParams(max_tokens=400, temperature=0, top_p=1)

    async def scenario():
        running = engine.stream(ask("Tell me a long story."), long)
        await anext(running)  # holds the only slot
        waiting = engine.stream(ask("Tell me another story."), long)
        started = time.monotonic()
        with pytest.raises(EngineBusy) as refused:
            engine.stream(ask("And a third one."), long)
        elapsed = time.monotonic() - started
        await running.aclose()
        first_of_waiting = await anext(waiting)  # it gets the freed slot
        await waiting.aclose()
        return refused.value, elapsed, first_of_waiting

    try:
        error, elapsed, first = asyncio.run(scenario())
    finally:
        engine.close()
    assert error.code == "server_overloaded" and error.retry_after >= 1
    assert "busy" in error.message
    assert elapsed < 0.5
    assert first.text


@pytest.fixture(scope="module")
def one_slot_server():
    env = {"LABS_PARALLEL": "1", "LABS_MAX_QUEUE": "0", "LABS_N_CTX": "1024"}
    with running_server(env) as url:
        yield url


def long_request(model: str, stream: bool) -> dict:
    return {"model": model, "max_tokens": 900, "temperature": 0, "stream": stream,
            "messages": [{"role": "user", "content": "Tell me a very long story."}]}


def short_request(model: str) -> dict:
    return {"model": model, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}]}


def served_chat_model(url: str) -> str:
    return httpx.get(f"{url}/v1/models").json()["data"][0]["id"]


def slot_is_free_again(url: str, model: str, within: float = 3.0) -> bool:
    """With one slot and no queue, a request succeeds only once the slot is free."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        response = httpx.post(f"{url}/v1/chat/completions", json=short_request(model),
                              timeout=30)
        if response.status_code == 200:
            return True
        assert response.status_code == 503 and response.headers["Retry-After"]
        time.sleep(0.1)
    return False


def test_server_a_disconnected_stream_gives_its_slot_to_the_next_request(one_slot_server):
    model = served_chat_model(one_slot_server)
    with httpx.stream("POST", f"{one_slot_server}/v1/chat/completions",
                      json=long_request(model, stream=True), timeout=30) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")
        busy = httpx.post(f"{one_slot_server}/v1/chat/completions",
                          json=short_request(model), timeout=30)
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "server_overloaded"
    assert slot_is_free_again(one_slot_server, model)


def test_server_a_disconnected_plain_request_gives_its_slot_back(one_slot_server):
    model = served_chat_model(one_slot_server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{one_slot_server}/v1/chat/completions",
                   json=long_request(model, stream=False), timeout=1.0)
    assert slot_is_free_again(one_slot_server, model)


def test_a_request_that_waits_past_the_queue_timeout_gets_503():
    engine = LlamaCppChatEngine("smol", bundled_gguf_path(), LlamaCppOptions(
        slots=1, max_waiting=4, context_per_slot=512, queue_timeout_s=0.3))
    long = SamplingParams(max_tokens=400, temperature=0, top_p=1)

    async def scenario():
        running = engine.stream(ask("Tell me a long story."), long)
        await anext(running)
        waiting = engine.stream(ask("Tell me another story."), long)
        with pytest.raises(EngineBusy) as timed_out:
            await anext(waiting)
        await running.aclose()
        return timed_out.value

    try:
        error = asyncio.run(scenario())
    finally:
        engine.close()
    assert error.code == "queue_timeout" and "0.3 s" in error.message


def test_each_step_decodes_with_the_count_the_policy_gives_for_its_situation(engine):
    """The scheduler asks its thread policy before every step with the step's situation
    (sequences decoding, another engine computing) and decodes with the answer. Which count
    is faster is the policy's own business (measured; tests/unit/test_thread_policy.py)."""
    from labs_api.compute import CPU_WORK

    full = engine.scheduler.full_threads
    if full < 2:
        pytest.skip("needs at least 2 cores")
    rule = {(1, False): full - 1, (4, False): full, (4, True): full - 1}

    class ByRule:
        def __init__(self) -> None:
            self.asked: set = set()

        def threads_for_step(self, situation, members, steady) -> int:
            self.asked.add(situation)
            return rule.get(situation, full)

    params = SamplingParams(max_tokens=6, temperature=0, top_p=1)
    measured, policy = engine.scheduler.thread_policy, ByRule()
    engine.scheduler.thread_policy = policy

    async def threads_with(streams: int, busy: bool) -> int:
        async def one(i: int) -> None:
            [chunk async for chunk in engine.stream(ask(PROMPTS[i]), params)]

        seen: list[int] = []  # thread counts sampled while all the streams are active

        async def watch() -> None:
            while True:
                if engine.scheduler.active_count() == streams:
                    seen.append(engine.model.threads)
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        with CPU_WORK.running() if busy else contextlib.nullcontext():
            await asyncio.gather(*(one(i) for i in range(streams)))
        watcher.cancel()
        return collections.Counter(seen).most_common(1)[0][0]

    try:
        assert asyncio.run(threads_with(streams=1, busy=False)) == full - 1
        assert asyncio.run(threads_with(streams=4, busy=False)) == full
        assert asyncio.run(threads_with(streams=4, busy=True)) == full - 1
    finally:
        engine.scheduler.thread_policy = measured
    assert set(rule) <= policy.asked
