"""A scripted chat engine for HTTP-layer tests: deterministic, instant, records its calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from labs_api.engines.chat.base import (
    ChatEngine,
    ChatMessage,
    GenerationChunk,
    SamplingParams,
    TokenLogprob,
)
from labs_api.engines.chat.stop_text import StopSequenceFilter
from labs_api.models import ModelRegistry, ModelSlot


class FakeChatEngine(ChatEngine):
    """Answers with ``reply`` split into words, one word per token; counts words as tokens."""

    def __init__(self, model_id: str = "fake-chat", reply: str = "Hello there, how are you?",
                 context_length: int = 64, delay: float = 0.0) -> None:
        self.model_id = model_id
        self.reply = reply
        self.context_length = context_length
        self.delay = delay
        self.calls: list[tuple[list[ChatMessage], SamplingParams]] = []
        self.cancelled = 0
        self.finished = 0
        self.vocab_size = 1000

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        self.last_messages = messages
        return list(range(sum(len(m.content.split()) for m in messages)))

    def tokenize_text(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def detokenize(self, tokens: list[int]) -> str:
        """Token ``i`` reads ``w<i>``, words joined by spaces."""
        return " ".join(f"w{t}" for t in tokens)

    def stream_tokens(self, prompt: list[int], params: SamplingParams
                      ) -> AsyncIterator[GenerationChunk]:
        self.calls.append((getattr(self, "last_messages", []), params))
        return self._run(len(prompt), params)

    async def _run(self, prompt_tokens: int, params: SamplingParams
                   ) -> AsyncIterator[GenerationChunk]:
        words = self.reply.split(" ")
        stops = StopSequenceFilter(params.stop)
        produced = 0
        finish = "stop"
        try:
            for i, word in enumerate(words):
                if produced >= params.max_tokens:
                    finish = "length"
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                produced += 1
                text = stops.push(word if i == 0 else " " + word)
                logprobs = None
                if params.logprobs is not None:
                    logprobs = [TokenLogprob(word, -0.5, word.encode(), tuple(
                        (f"alt{k}", -1.0 - k, f"alt{k}".encode())
                        for k in range(params.logprobs)))]
                if text:
                    yield GenerationChunk(text=text, logprobs=logprobs)
                if stops.stopped:
                    break
            yield GenerationChunk(text=stops.flush(), finish_reason=finish,
                                  prompt_tokens=prompt_tokens, completion_tokens=produced)
            self.finished += 1
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled += 1
            raise


def registry_with(*engines: object, states: dict[str, str] | None = None) -> ModelRegistry:
    """A registry whose slots hold ready-made engines (already 'loaded')."""
    slots = []
    for engine in engines:
        model_id = engine.model_id  # type: ignore[attr-defined]
        slot = ModelSlot(model_id=model_id, kind="chat", load=lambda e=engine: e)
        slot.state = "ready"
        slot.engine = engine
        slots.append(slot)
    for slot in slots:
        if states and slot.model_id in states:
            slot.state = states[slot.model_id]  # type: ignore[assignment]
    return ModelRegistry(slots)
