"""Piper voices (VITS exported to ONNX) through the piper-tts package and onnxruntime."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from labs_api.engines.optional import require
from labs_api.engines.speech.base import SpeechEngine

log = logging.getLogger("labs_api.piper")


class PiperSpeechEngine(SpeechEngine):
    """One Piper voice file. A multi-speaker voice offers each speaker as a voice."""

    def __init__(self, model_id: str, model_path: str | Path, config_path: str | Path | None = None,
                 *, threads: int = 1) -> None:
        super().__init__()
        onnxruntime = require("onnxruntime", package="piper-tts")
        piper_voice = require("piper.voice", package="piper-tts")
        piper_config = require("piper.config", package="piper-tts")
        self._synthesis_config = piper_config.SynthesisConfig
        model_path = Path(model_path)
        config_path = Path(config_path) if config_path else Path(f"{model_path}.json")
        for path in (model_path, config_path):
            if not path.is_file():
                raise FileNotFoundError(f"Piper voice file not found: {path}")
        with open(config_path, encoding="utf-8") as handle:
            raw = json.load(handle)
        config = piper_config.PiperConfig.from_dict(raw)
        # piper's own PiperVoice.load() gives onnxruntime every core; on a small machine that
        # competes with the chat model, so the thread count is ours to choose (LABS_TTS_THREADS).
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        session = onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        self._voice = piper_voice.PiperVoice(session=session, config=config)
        self.model_id = model_id
        self.threads = threads
        self.sample_rate = int(config.sample_rate)
        speakers = dict(config.speaker_id_map or {})
        self._speaker_ids: dict[str, int | None] = (
            {name: int(sid) for name, sid in speakers.items()}
            if speakers
            else {model_path.name.removesuffix(".onnx"): None}
        )
        self.voices = tuple(self._speaker_ids)
        language = voice_language(raw)
        self.voice_languages = dict.fromkeys(self.voices, language) if language else {}
        self.synthesize("Ready.", self.default_voice)  # warm up: the first run is the slowest

    def synthesize(self, text: str, voice: str) -> np.ndarray:
        config = self._synthesis_config(speaker_id=self._speaker_ids[voice])
        parts = [chunk.audio_float_array for chunk in self._voice.synthesize(text, config)]
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


def voice_language(config: dict) -> str | None:
    """The language a Piper voice's JSON config names (``language.code``, else espeak's)."""
    language = config.get("language")
    if isinstance(language, dict) and isinstance(language.get("code"), str):
        return language["code"]
    espeak = config.get("espeak")
    if isinstance(espeak, dict) and isinstance(espeak.get("voice"), str):
        return espeak["voice"]
    return None
