"""The interface every speech engine implements: text in, mono float32 samples out."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from labs_api.compute import CPU_WORK
from labs_api.engines.speech.sentences import split_sentences


class SpeechEngine(ABC):
    """Turns text into audio samples, one sentence at a time, on a worker thread of its own.

    An engine knows nothing of HTTP or file formats: it yields float32 mono samples in
    [-1, 1] at ``sample_rate``. ``voices`` are the names it accepts; the first is its default.
    """

    model_id: str
    sample_rate: int
    voices: tuple[str, ...]
    #: Longest piece of text handed to ``synthesize`` at once (longer sentences are cut).
    max_sentence_chars: int = 300

    def __init__(self) -> None:
        # One worker: the model runs one sentence at a time, and concurrent requests take
        # turns sentence by sentence (each request submits its next sentence when it needs it).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech")

    @property
    def default_voice(self) -> str:
        return self.voices[0]

    @abstractmethod
    def synthesize(self, text: str, voice: str) -> np.ndarray:
        """Speak one sentence (blocking). Returns float32 mono samples in [-1, 1]; may be empty."""

    def sentences(self, text: str) -> list[str]:
        return split_sentences(text, self.max_sentence_chars)

    async def stream(self, text: str, voice: str) -> AsyncIterator[np.ndarray]:
        """Yield the samples of each sentence of ``text`` as soon as it is synthesised.

        Synthesis runs on the engine's worker thread, one sentence ahead of the consumer.
        Closing the iterator early (the client went away) stops before the next sentence:
        a sentence not yet started is never synthesised.
        """
        loop = asyncio.get_running_loop()
        sentences = self.sentences(text)

        def submit(index: int) -> Future[np.ndarray] | None:
            if index >= len(sentences):
                return None
            return self._executor.submit(self._synthesize_marked, sentences[index], voice)

        pending = submit(0)
        index = 0
        try:
            while pending is not None:
                current = pending
                samples = await asyncio.wrap_future(current, loop=loop)
                index += 1
                pending = submit(index)
                yield samples
        finally:
            if pending is not None:
                pending.cancel()

    def _synthesize_marked(self, sentence: str, voice: str) -> np.ndarray:
        # While a sentence is synthesised, the chat scheduler leaves this work a core.
        with CPU_WORK.running():
            return self.synthesize(sentence, voice)

    async def synthesize_all(self, text: str, voice: str) -> np.ndarray:
        """Every sentence of ``text``, joined."""
        parts = [samples async for samples in self.stream(text, voice)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False, cancel_futures=True)
