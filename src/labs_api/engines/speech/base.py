"""The interface every speech engine implements: text in, mono float32 samples out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from labs_api.compute import CPU_WORK
from labs_api.engines.errors import EngineBusy
from labs_api.engines.speech.sentences import split_sentences


class SpeechEngine(ABC):
    """Turns text into audio samples, one sentence at a time, on a worker thread of its own.

    An engine knows nothing of HTTP or file formats: it yields float32 mono samples in
    [-1, 1] at ``sample_rate``. ``voices`` are the names it accepts; the first is its default.
    """

    model_id: str
    sample_rate: int
    voices: tuple[str, ...]
    #: The language of each voice (a BCP 47-like code such as ``en_US``), where the model says.
    voice_languages: dict[str, str] = {}  # set per instance, never mutated
    #: Longest piece of text handed to ``synthesize`` at once (longer sentences are cut).
    max_sentence_chars: int = 300
    #: Requests in synthesis at once (taking turns sentence by sentence); one more gets 503
    #: at once rather than a share that makes every one of them slow (LABS_TTS_MAX_QUEUE).
    max_queue: int = 16

    def __init__(self) -> None:
        # One worker: the model runs one sentence at a time, and concurrent requests take
        # turns sentence by sentence (each request submits its next sentence when it needs it).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech")
        self._admitted = 0
        self.sentences_synthesised = 0  # how many ``synthesize`` calls ran (tests, logs)
        self._seconds_per_sentence = 0.0  # a moving average, for Retry-After

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
        self._admit()
        samples = self._stream_admitted(loop, self.sentences(text), voice)
        try:
            async for part in samples:
                yield part
        finally:
            self._admitted -= 1
            await samples.aclose()  # cancels the next sentence if it has not started

    def _admit(self) -> None:
        """Count this request in, or refuse it (503 with an estimate of when to retry)."""
        if self._admitted >= self.max_queue:
            wait = self._admitted * max(self._seconds_per_sentence, 0.1)
            raise EngineBusy(
                f"Speech synthesis is busy: {self._admitted} requests are being synthesised "
                f"(at most {self.max_queue}). Retry shortly.",
                retry_after=max(1, min(30, round(wait))), code="server_overloaded")
        self._admitted += 1

    async def _stream_admitted(self, loop: asyncio.AbstractEventLoop, sentences: list[str],
                               voice: str) -> AsyncIterator[np.ndarray]:
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
        started = time.perf_counter()
        with CPU_WORK.running():
            samples = self.synthesize(sentence, voice)
        elapsed = time.perf_counter() - started
        self.sentences_synthesised += 1
        average = self._seconds_per_sentence
        self._seconds_per_sentence = elapsed if average == 0 else 0.8 * average + 0.2 * elapsed
        return samples

    async def synthesize_all(self, text: str, voice: str) -> np.ndarray:
        """Every sentence of ``text``, joined."""
        parts = [samples async for samples in self.stream(text, voice)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False, cancel_futures=True)
