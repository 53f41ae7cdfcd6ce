"""The measured thread policy on the bundled GGUF: switching llama.cpp's thread count between
decode steps leaves greedy output exactly as with a fixed count (one thread, or all), alone and
with eight streams together; and on the real scheduler the policy settles on a count."""

from __future__ import annotations

import asyncio

import pytest

from labs_api.engines.chat.base import ChatMessage, SamplingParams
from labs_api.engines.chat.factory import bundled_gguf_path
from labs_api.engines.chat.llama_cpp_engine import LlamaCppChatEngine, LlamaCppOptions
from labs_api.engines.chat.thread_policy import MeasuredThreadPolicy

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_tokens=40, temperature=0.0, top_p=1.0)
PROMPTS = [f"Write two sentences about {topic}." for topic in
           ("the sea", "a forest", "the moon", "a city at night", "winter", "a library",
            "a train", "an island")]


@pytest.fixture(scope="module")
def engine():
    # Separate KV streams: with the shared cache, where a batched sequence's cells land (and
    # so its float rounding) depends on what ran before, which is not what this test is about.
    engine = LlamaCppChatEngine("smol", bundled_gguf_path(),
                                LlamaCppOptions(slots=8, max_waiting=16, context_per_slot=512,
                                                threads=2, unified_kv=False))
    yield engine
    engine.close()


def fixed(threads: int) -> MeasuredThreadPolicy:
    policy = MeasuredThreadPolicy(2)
    policy.candidates = (threads,)
    return policy


def outputs(engine, policy: MeasuredThreadPolicy) -> tuple[list[str], list[str]]:
    engine.scheduler.thread_policy = policy  # the scheduler is idle between runs

    async def scenario():
        alone = [(await engine.generate([ChatMessage("user", p)], GREEDY)).text
                 for p in PROMPTS[:3]]
        together = await asyncio.gather(*(engine.generate([ChatMessage("user", p)], GREEDY)
                                          for p in PROMPTS))
        return alone, [result.text for result in together]

    return asyncio.run(scenario())


def test_greedy_text_is_the_same_whatever_the_thread_count(engine):
    one = outputs(engine, fixed(1))
    two = outputs(engine, fixed(2))
    switching = MeasuredThreadPolicy(2, trial_steps=10**9)  # never settles: alternates 2, 1...
    alternating = outputs(engine, switching)
    assert len(set(one[1])) == len(PROMPTS)  # the prompts give different answers
    assert one == two == alternating
    measured = switching.situations
    assert any(len(state.samples.get(1, [])) > 10 and len(state.samples.get(2, [])) > 10
               for state in measured.values())  # it really did switch between steps


def test_the_default_policy_settles_on_the_real_scheduler(engine):
    policy = MeasuredThreadPolicy(2, trial_steps=4)
    alone, _ = outputs(engine, policy)
    assert policy.chosen((1, False)) in (1, 2)  # measured, whichever was faster here
    assert alone == outputs(engine, fixed(2))[0]
