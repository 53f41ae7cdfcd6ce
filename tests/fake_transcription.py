"""A scripted transcription engine for HTTP-layer tests: one segment per second of audio that
is not silent, instant, and it records what it was asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from labs_api.engines.errors import InvalidRequest
from labs_api.engines.transcription.base import (
    SAMPLE_RATE,
    Segment,
    TranscriptionEngine,
    TranscriptionInfo,
    TranscriptionOptions,
    Word,
)
from labs_api.models import ModelRegistry, ModelSlot

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


class FakeTranscriptionEngine(TranscriptionEngine):
    """Each loud second of audio becomes a segment " <word> <word>." (words from WORDS)."""

    def __init__(self, model_id: str = "fake-whisper", multilingual: bool = False,
                 max_queue: int = 8, gate: threading.Event | None = None,
                 delay: float = 0.0) -> None:
        super().__init__(max_queue=max_queue)
        self.model_id = model_id
        self.multilingual = multilingual
        self.languages = ({"en": "english", "fr": "french", "de": "german"} if multilingual
                          else {"en": "english"})
        self.calls: list[TranscriptionOptions] = []
        self.steps = 0
        self.gate = gate  # when given, each segment waits for it to be set
        self.delay = delay  # seconds each segment takes

    def start(self, samples: np.ndarray, options: TranscriptionOptions
              ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        if options.language not in (None, *self.languages):
            raise InvalidRequest("bad language", param="language")
        self.calls.append(options)
        seconds = [samples[i:i + SAMPLE_RATE] for i in range(0, samples.size, SAMPLE_RATE)]
        loud = [i for i, s in enumerate(seconds) if s.size and float(np.abs(s).max()) > 0.05]
        language = options.language or ("fr" if self.multilingual else "en")
        info = TranscriptionInfo(language, 0.9, samples.size / SAMPLE_RATE,
                                 float(len(loud)))
        return info, self._segments(loud, options)

    def _segments(self, loud: list[int], options: TranscriptionOptions) -> Iterator[Segment]:
        for n, second in enumerate(loud):
            if self.gate is not None:
                self.gate.wait(10)
            if self.delay:
                time.sleep(self.delay)
            self.steps += 1
            first, second_word = WORDS[(2 * n) % len(WORDS)], WORDS[(2 * n + 1) % len(WORDS)]
            words = ()
            if options.word_timestamps:
                words = (Word(f" {first}", second, second + 0.4, 0.9),
                         Word(f" {second_word}.", second + 0.5, second + 0.9, 0.8))
            yield Segment(id=n, seek=second * 100, start=float(second), end=second + 0.9,
                          text=f" {first} {second_word}.", tokens=(1, 2, 3),
                          temperature=options.temperature, avg_logprob=-0.2,
                          compression_ratio=1.1, no_speech_prob=0.01, words=words)


def transcription_registry(engine: TranscriptionEngine) -> ModelRegistry:
    slot = ModelSlot(model_id=engine.model_id, kind="transcription", load=lambda: engine)
    slot.state = "ready"
    slot.engine = engine
    return ModelRegistry([slot])


def tone(seconds: float, loud: bool = True, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A 440 Hz tone (or silence) of ``seconds``."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) if loud else 0 * t).astype(np.float32)
