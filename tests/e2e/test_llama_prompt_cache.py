"""The host-memory prompt cache on the bundled GGUF: a conversation whose slot has moved on is
copied back, not evaluated again, and continues exactly as if it had stayed in its slot."""

from __future__ import annotations

import asyncio

import pytest

from labs_api.engines.chat.base import ChatMessage, SamplingParams
from labs_api.engines.chat.factory import bundled_gguf_path
from labs_api.engines.chat.llama_cpp_engine import LlamaCppChatEngine, LlamaCppOptions
from labs_api.engines.chat.prompt_cache import PromptCache, common_prefix

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, top_p=1.0)
STORY = [ChatMessage("user", "Tell me about the harbour at dawn, the boats and the gulls.")]
OTHER = [ChatMessage("user", "List three colours of autumn leaves.")]


def make(unified: bool, cache_mb: int) -> LlamaCppChatEngine:
    return LlamaCppChatEngine("smol", bundled_gguf_path(), LlamaCppOptions(
        slots=1, context_per_slot=1024, unified_kv=unified,
        prompt_cache_bytes=cache_mb << 20))


async def run(engine: LlamaCppChatEngine, messages: list[ChatMessage]) -> tuple[str, int]:
    """The reply's text and how many prompt tokens came from a cache."""
    text, cached = "", -1
    async for chunk in engine.stream(messages, GREEDY):
        text += chunk.text or ""
        if chunk.finish_reason:
            cached = chunk.cached_tokens
    return text, cached


@pytest.mark.parametrize("unified", [True, False], ids=["shared KV", "KV per slot"])
def test_an_evicted_conversation_is_restored_and_continues_the_same(unified):
    engine = make(unified, cache_mb=64)
    try:
        prompt = len(engine.tokenize_prompt(STORY))
        first, cached_first = asyncio.run(run(engine, STORY))
        assert cached_first == 0
        # the same prompt again while it is still in the slot (or in the host cache)
        kept, cached_kept = asyncio.run(run(engine, STORY))
        assert cached_kept == prompt - 1  # all but the token fed again for its logits
        asyncio.run(run(engine, OTHER))  # the only slot moves on to another conversation
        restored, cached_restored = asyncio.run(run(engine, STORY))
        assert cached_restored == prompt - 1
        assert engine.scheduler.restored_prompt_tokens >= prompt - 1
        # identical cells, the last prompt token fed alone both times: the same greedy reply
        assert restored == kept and restored.strip()
        assert len(engine.scheduler.prompt_cache) >= 2
    finally:
        engine.close()


def test_without_the_cache_an_evicted_conversation_is_evaluated_again():
    engine = make(unified=False, cache_mb=0)
    try:
        asyncio.run(run(engine, STORY))
        asyncio.run(run(engine, OTHER))
        _, cached = asyncio.run(run(engine, STORY))
        # only what the chat template puts before both prompts is shared with the other one
        shared = common_prefix(engine.tokenize_prompt(STORY), engine.tokenize_prompt(OTHER))
        assert cached == shared < len(engine.tokenize_prompt(STORY)) - 1
        assert engine.scheduler.prompt_cache is None
    finally:
        engine.close()


def test_a_state_that_no_longer_fits_falls_back_to_evaluating_the_prompt():
    """A restore the KV cache has no room for leaves the sequence empty and the prompt is
    evaluated as if nothing had been cached."""
    engine = make(unified=True, cache_mb=64)
    try:
        expected, _ = asyncio.run(run(engine, STORY))
        asyncio.run(run(engine, OTHER))
        entry = engine.scheduler.prompt_cache.best_for(
            engine.tokenize_prompt(STORY))[0]
        assert engine.model.restore_sequence(0, entry.state[: len(entry.state) // 2]) is False
        again, _ = asyncio.run(run(engine, STORY))
        assert again.strip()
    finally:
        engine.close()


def test_a_conversation_too_large_for_the_cache_stays_in_its_slot():
    """With the shared KV an idle slot is cleared only once its conversation is saved: one the
    budget cannot hold keeps the in-slot prefix reuse it had without the cache."""
    engine = make(unified=True, cache_mb=0)
    engine.scheduler.prompt_cache = PromptCache(budget_bytes=1024)  # smaller than any state
    try:
        prompt = len(engine.tokenize_prompt(STORY))
        asyncio.run(run(engine, STORY))
        assert len(engine.scheduler.prompt_cache) == 0
        _, cached = asyncio.run(run(engine, STORY))
        assert cached == prompt - 1
    finally:
        engine.close()
