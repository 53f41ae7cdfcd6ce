"""The interface every transcription engine implements: 16 kHz mono samples in, timed text
segments out, one segment at a time. Nothing here knows HTTP or file formats.

A stream yields one :class:`TranscriptionInfo` first (language, durations), then each
:class:`Segment` as soon as the model has decoded it. Engines admit a bounded number of
transcriptions (running or waiting); past it they raise ``EngineBusy``.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from labs_api.compute import CPU_WORK
from labs_api.engines.errors import EngineBusy
from labs_api.engines.progress import PROGRESS

SAMPLE_RATE = 16_000
Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class VadSettings:
    """Voice activity detection: what counts as speech, and how long a pause ends it."""

    threshold: float = 0.5
    min_silence_ms: int = 2000
    speech_pad_ms: int = 400


@dataclass(frozen=True)
class TranscriptionOptions:
    task: Task = "transcribe"
    language: str | None = None  # None: detected (English-only models: "en")
    prompt: str | None = None
    temperature: float = 0.0  # 0: greedy/beam with fallback to higher temperatures
    word_timestamps: bool = False
    vad: VadSettings = field(default_factory=VadSettings)


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class TranscriptionInfo:
    language: str  # ISO-639-1 code
    language_probability: float
    duration: float  # seconds of audio given
    speech_duration: float  # seconds left after voice activity detection


class TranscriptionEngine(ABC):
    """Runs one transcription step at a time on a worker thread of its own.

    Concurrent transcriptions take turns segment batch by segment batch (each submits its next
    step when it needs it), up to ``1 + max_queue`` of them; one more raises ``EngineBusy``.
    ``languages`` maps the codes the model accepts to their English names.
    """

    model_id: str
    multilingual: bool
    languages: dict[str, str]
    max_queue: int = 8

    def __init__(self, max_queue: int = 8) -> None:
        self.max_queue = max_queue
        self._active = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transcription")

    @abstractmethod
    def start(self, samples: np.ndarray, options: TranscriptionOptions
              ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        """Begin (blocking): voice activity detection and language; the segments come lazily."""

    async def stream(self, samples: np.ndarray, options: TranscriptionOptions
                     ) -> AsyncIterator[TranscriptionInfo | Segment]:
        """The info, then each segment as it is decoded. Closing the iterator early (the client
        went away) stops before the next decoding step."""
        if self._active > self.max_queue:
            raise EngineBusy(
                f"{self._active} transcriptions are running or waiting, the most this server "
                "takes at once; retry shortly.", retry_after=max(1, self._active))
        self._active += 1
        loop = asyncio.get_running_loop()
        try:
            info, segments = await loop.run_in_executor(
                self._executor, self._marked, lambda: self.start(samples, options))
            yield info
            while True:
                segment = await loop.run_in_executor(self._executor, self._marked,
                                                     lambda: next(segments, None))
                if segment is None:
                    return
                PROGRESS.tick()
                yield segment
        finally:
            self._active -= 1

    def queue_stats(self) -> tuple[int, int]:
        """(running, waiting): at most one runs at a time."""
        return min(1, self._active), max(0, self._active - 1)

    @staticmethod
    def _marked(step):
        # While the model computes, the chat scheduler leaves this work a core.
        with CPU_WORK.running():
            return step()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False, cancel_futures=True)
