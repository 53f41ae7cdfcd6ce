"""Engines for the engine-worker tests: loaded inside a worker process by these module-level
(picklable) loaders. Their behaviour is chosen by the prompt, so a test can make a worker
crash or hang on one request while the others are served normally."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import numpy as np

from labs_api.engines.chat.base import ChatMessage, GenerationChunk, SamplingParams
from tests.fakes import FakeChatEngine

CRASH = "CRASH"  # a message containing this kills the worker with SIGSEGV
HANG = "HANG"  # ... makes the engine wait forever without progress
BLOCK = "BLOCK"  # ... blocks the worker's event loop (no heartbeats at all)


class TroubleChatEngine(FakeChatEngine):
    """FakeChatEngine whose prompt tokens encode the trouble words (token -1, -2, -3)."""

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        tokens = super().tokenize_prompt(messages)
        text = " ".join(m.content for m in messages)
        for code, word in ((-1, CRASH), (-2, HANG), (-3, BLOCK)):
            if word in text:
                tokens.append(code)
        return tokens

    def stream_tokens(self, prompt: list[int], params: SamplingParams
                      ) -> AsyncIterator[GenerationChunk]:
        if -1 in prompt or -2 in prompt or -3 in prompt:
            return self._trouble(prompt)
        return super().stream_tokens(prompt, params)

    async def _trouble(self, prompt: list[int]) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk(text="Starting")
        await asyncio.sleep(0.05)
        if -1 in prompt:
            os.kill(os.getpid(), signal.SIGSEGV)
        if -3 in prompt:
            import time

            time.sleep(3600)
        await asyncio.sleep(3600)
        yield GenerationChunk(text="never")


class FakeEmbeddingBatcher:
    """Stands for an EmbeddingBatcher: a vector per text, its length the first component."""

    model_id = "fake-embed"
    dimensions = 4
    max_input_tokens = 16

    async def embed(self, texts: list[str], task: str) -> np.ndarray:
        if any(CRASH in t for t in texts):
            os.kill(os.getpid(), signal.SIGKILL)
        return np.array([[len(t), 0, 0, 0] for t in texts], dtype=np.float32)

    def close(self) -> None:
        pass


def load_trouble_chat(model_id: str = "fake-chat", delay: float = 0.0) -> TroubleChatEngine:
    return TroubleChatEngine(model_id, delay=delay)


def load_fake_embeddings() -> FakeEmbeddingBatcher:
    return FakeEmbeddingBatcher()


def load_broken() -> None:
    raise FileNotFoundError("no such model file: /nowhere/model.gguf")
