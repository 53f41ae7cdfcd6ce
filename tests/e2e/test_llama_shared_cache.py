"""The shared llama.cpp KV cache on the bundled GGUF: one request may use far more than an
equal share of the cells, requests wait while the cells they need are promised to others, and
a prompt that could never fit is a 400."""

from __future__ import annotations

import asyncio
import time

import pytest

from labs_api.engines.chat.base import ChatMessage, SamplingParams
from labs_api.engines.chat.factory import bundled_gguf_path
from labs_api.engines.chat.llama_cpp_engine import LlamaCppChatEngine, LlamaCppOptions
from labs_api.engines.errors import PromptTooLong

GREEDY = SamplingParams(max_tokens=8, temperature=0.0, top_p=1.0)


@pytest.fixture(scope="module")
def engine():
    # 2 slots of 1024 cells on average: 2048 cells shared.
    engine = LlamaCppChatEngine("smol", bundled_gguf_path(), LlamaCppOptions(
        slots=2, context_per_slot=1024, max_waiting=4, queue_timeout_s=600))
    yield engine
    engine.close()


def long_prompt(engine: LlamaCppChatEngine, tokens: int, topic: str) -> list[ChatMessage]:
    """A conversation whose prompt is about ``tokens`` tokens long."""
    filler = f"The {topic} report says the weather was calm. " * (tokens // 10)
    messages = [ChatMessage("user", filler + "What did the report say?")]
    assert abs(len(engine.tokenize_prompt(messages)) - tokens) < tokens * 0.2
    return messages


def test_one_request_may_use_the_whole_cache(engine):
    assert engine.model.kv_tokens == 2048
    assert engine.context_length == 2048  # the whole cache (below the 8192 it was trained for)
    messages = long_prompt(engine, 1700, "harbour")  # far more than an equal share (1024)
    result = asyncio.run(engine.generate(messages, GREEDY))
    assert result.prompt_tokens > 1024
    assert result.completion_tokens >= 1 and result.text.strip()


def test_a_prompt_that_can_never_fit_is_refused(engine):
    with pytest.raises(PromptTooLong):
        asyncio.run(engine.generate(long_prompt(engine, 2300, "valley"), GREEDY))


def test_a_request_waits_while_its_cells_are_promised_to_another(engine):
    first = long_prompt(engine, 1200, "mountain")
    second = long_prompt(engine, 1200, "river")
    params = SamplingParams(max_tokens=24, temperature=0.0, top_p=1.0)
    seen_waiting = []

    async def scenario():
        running = asyncio.ensure_future(engine.generate(first, params))
        while engine.scheduler.active_count() == 0:
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(engine.generate(second, params))
        deadline = time.monotonic() + 60
        while not running.done() and time.monotonic() < deadline:
            # a free slot, yet no room in the cache: the second waits in the queue
            seen_waiting.append((engine.scheduler.active_count(),
                                 engine.scheduler.waiting_count()))
            await asyncio.sleep(0.05)
        return await running, await waiting

    one, two = asyncio.run(scenario())
    assert (1, 1) in seen_waiting
    assert (2, 0) not in seen_waiting  # never both at once: 2 x 1224 cells > 2048
    assert one.text.strip() and two.text.strip()
    assert one.finish_reason in ("stop", "length") and two.finish_reason in ("stop", "length")
