"""Whisper through faster-whisper (CTranslate2): a converted model directory or a Hub id."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from labs_api.engines.errors import InvalidRequest
from labs_api.engines.optional import require
from labs_api.engines.transcription.base import (
    Segment,
    TranscriptionEngine,
    TranscriptionInfo,
    TranscriptionOptions,
    Word,
)
from labs_api.engines.transcription.languages import LANGUAGE_NAMES

log = logging.getLogger("labs_api.whisper")

#: OpenAI's temperature 0 means "start greedy, and raise the temperature when decoding fails".
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class FasterWhisperEngine(TranscriptionEngine):
    def __init__(self, model_id: str, source: str, *, threads: int = 1,
                 compute_type: str = "float32", beam_size: int = 5, max_queue: int = 8,
                 hf_token: str | None = None, files: dict[str, bytes] | None = None) -> None:
        """``source``: a model directory or Hub id; with ``files`` (the model's files in
        memory), only a name."""
        super().__init__(max_queue=max_queue)
        faster_whisper = require("faster_whisper", package="faster-whisper")
        self._model = faster_whisper.WhisperModel(
            source, device="cpu", compute_type=compute_type, cpu_threads=threads,
            num_workers=1, use_auth_token=hf_token or None, files=files)
        self.model_id = model_id
        self.threads = threads
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.multilingual = bool(self._model.model.is_multilingual)
        self.languages = {code: LANGUAGE_NAMES.get(code, code)
                          for code in self._model.supported_languages}
        # Warm up (the first run allocates); a second of silence is dropped by the VAD.
        self.start(np.zeros(16_000, dtype=np.float32), TranscriptionOptions(language="en"))

    def start(self, samples: np.ndarray, options: TranscriptionOptions
              ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        if options.language is not None and options.language not in self.languages:
            raise InvalidRequest(f"Language '{options.language}' is not supported by model "
                                 f"'{self.model_id}'.", param="language", code="invalid_value")
        if options.task == "translate" and not self.multilingual:
            raise InvalidRequest(f"Model '{self.model_id}' is English-only: it cannot "
                                 "translate.", param="model", code="invalid_value")
        temperatures: Any = (FALLBACK_TEMPERATURES if options.temperature == 0
                             else options.temperature)
        vad = options.vad
        segments, info = self._model.transcribe(
            samples,
            language=options.language,
            task=options.task,
            beam_size=self.beam_size,
            temperature=temperatures,
            initial_prompt=options.prompt or None,
            word_timestamps=options.word_timestamps,
            vad_filter=True,
            vad_parameters={"threshold": vad.threshold,
                            "min_silence_duration_ms": vad.min_silence_ms,
                            "speech_pad_ms": vad.speech_pad_ms},
        )
        found = TranscriptionInfo(language=str(info.language),
                                  language_probability=float(info.language_probability),
                                  duration=float(info.duration),
                                  speech_duration=float(info.duration_after_vad))
        return found, (_segment(s) for s in segments)


def _segment(found: Any) -> Segment:
    """faster-whisper's segment as plain values (its numbers are numpy floats)."""
    words = tuple(Word(str(w.word), float(w.start), float(w.end), float(w.probability))
                  for w in (found.words or ()))
    return Segment(id=int(found.id) - 1, seek=int(found.seek), start=float(found.start),
                   end=float(found.end), text=str(found.text),
                   tokens=tuple(int(t) for t in found.tokens),
                   temperature=float(found.temperature or 0.0),
                   avg_logprob=float(found.avg_logprob),
                   compression_ratio=float(found.compression_ratio),
                   no_speech_prob=float(found.no_speech_prob), words=words)
