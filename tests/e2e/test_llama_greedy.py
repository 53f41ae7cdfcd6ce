"""Temperature 0 without bias or penalties: the scheduler takes the argmax of the logits itself
instead of running llama.cpp's greedy sampler chain (which copies the whole vocabulary into a
candidate array for every token). On the bundled GGUF the two pick the same token at every
step, for every sequence of a batch, and whole generations are unchanged."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from labs_api.engines.chat.base import ChatMessage, SamplingParams
from labs_api.engines.chat.factory import bundled_gguf_path
from labs_api.engines.chat.llama_cpp_engine import LlamaCppChatEngine, LlamaCppOptions
from labs_api.engines.chat.llama_cpp_model import ContextShape, LlamaCppModel

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_tokens=40, temperature=0.0, top_p=1.0)
PROMPTS = [f"Write two sentences about {topic}." for topic in
           ("the sea", "a forest", "the moon", "winter")]


def test_plain_greedy_is_only_the_bare_greedy_chain():
    assert LlamaCppModel.plain_greedy(GREEDY)
    for other in ({"temperature": 0.7}, {"logit_bias": ((5, 3.0),)},
                  {"presence_penalty": 0.5}, {"frequency_penalty": 0.5}):
        assert not LlamaCppModel.plain_greedy(dataclasses.replace(GREEDY, **other)), other


def test_argmax_equals_llama_cpp_greedy_sampler_for_each_sequence_of_a_batch():
    model = LlamaCppModel(bundled_gguf_path(), ContextShape(
        slots=4, context_per_slot=256, batch_tokens=256, threads=2, unified=False))
    try:
        sampler = model.new_sampler(GREEDY, 0)
        sequences = [model.tokenize(prompt, add_bos=True) for prompt in PROMPTS]
        lengths = [0] * len(sequences)
        feed = [list(tokens) for tokens in sequences]
        compared = 0
        for step in range(24):
            model.batch_clear()
            where = []
            for sequence, tokens in enumerate(feed):
                for offset, token in enumerate(tokens):
                    index = model.batch_add(token, lengths[sequence] + offset, sequence,
                                            offset == len(tokens) - 1)
                where.append(index)
                lengths[sequence] += len(tokens)
            model.decode()
            for sequence, index in enumerate(where):
                ours = model.greedy_token(index)
                theirs = int(model.lib.llama_sampler_sample(sampler, model.ctx, index))
                assert ours == theirs, (sequence, step)
                feed[sequence] = [ours]
                compared += 1
        assert compared == 24 * len(PROMPTS)
        model.free_sampler(sampler)
    finally:
        model.close()


def test_generations_equal_those_of_the_sampler_chain(monkeypatch):
    engine = LlamaCppChatEngine("smol", bundled_gguf_path(), LlamaCppOptions(
        slots=4, max_waiting=8, context_per_slot=512, threads=2, unified_kv=False))
    drawn: list[int] = []
    original = engine.model.greedy_token

    def counted(index: int) -> int:
        drawn.append(index)
        return original(index)

    async def texts() -> list[str]:
        results = await asyncio.gather(*(engine.generate([ChatMessage("user", p)], GREEDY)
                                         for p in PROMPTS))
        return [result.text for result in results]

    try:
        monkeypatch.setattr(engine.model, "greedy_token", counted)
        fast = asyncio.run(texts())
        assert len(drawn) >= 20 * len(PROMPTS)  # the argmax path did run
        monkeypatch.setattr(LlamaCppModel, "plain_greedy", staticmethod(lambda params: False))
        drawn.clear()
        chain = asyncio.run(texts())
        assert drawn == []  # and now the sampler chain drew every token
        assert len(set(fast)) == len(PROMPTS)
        assert fast == chain
    finally:
        engine.close()
