"""Turning speech requests into engine calls and audio bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from labs_api.api.speech.protocol import (
    OPENAI_SPEECH_MODELS,
    OPENAI_VOICES,
    SpeechRequest,
    TTSRequest,
)
from labs_api.audio import audio_encoder, time_stretch, wav_bytes
from labs_api.engines.errors import EngineRequestError
from labs_api.engines.speech.base import SpeechEngine
from labs_api.errors import APIError, BadRequestError, EngineError
from labs_api.models import ModelRegistry
from labs_api.settings import Settings

log = logging.getLogger("labs_api.speech")


class SpeechService:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    async def engine(self, model: str | None, keep_alive: float | None = None) -> SpeechEngine:
        """The engine for ``model``: None and OpenAI's speech model names mean the default.

        Raises 404 for a model that is not served, 503 while it loads, 500 if it failed to.
        """
        if model in OPENAI_SPEECH_MODELS and self.registry.find(model) is None:
            model = None
        return await self.registry.engine("speech", model, keep_alive)

    async def tts_wav(self, request: TTSRequest) -> bytes:
        """The spec's /v1/tts: the whole text in the default voice, as one complete WAV file."""
        engine = await self.engine(request.model, request.keep_alive)
        try:
            samples = await engine.synthesize_all(request.text, engine.default_voice)
        except (APIError, EngineRequestError):
            raise
        except Exception as exc:
            raise synthesis_error(exc) from exc
        return await asyncio.to_thread(wav_bytes, samples, engine.sample_rate)

    async def open_stream(self, request: SpeechRequest) -> tuple[str, AsyncIterator[bytes]]:
        """Start synthesising; return the media type and the encoded audio as it comes.

        Errors before the first audio (404, 503, unknown voice, a failing engine) raise here,
        so they get their status code; the first sentence is ready when this returns.
        """
        engine = await self.engine(request.model, request.keep_alive)
        voice = resolve_voice(engine, request.voice_name())
        encoder = audio_encoder(request.response_format, engine.sample_rate)
        chunks = encoded_audio(engine, request.input, voice, request.speed, encoder)
        try:
            first = await anext(chunks, b"")
        except BaseException:
            await chunks.aclose()
            raise
        return encoder.media_type, _prepend(first, chunks)


def resolve_voice(engine: SpeechEngine, requested: str) -> str:
    """A voice of ``engine`` for the name a client sent.

    The engine's own voice names match first (case-insensitively); OpenAI's built-in names then
    map onto the engine's voices in a fixed order (all of them to the one voice of a
    single-voice model). Anything else is a 400 that lists what is accepted.
    """
    wanted = requested.strip().lower()
    for voice in engine.voices:
        if voice.lower() == wanted:
            return voice
    if wanted in OPENAI_VOICES:
        return engine.voices[OPENAI_VOICES.index(wanted) % len(engine.voices)]
    own = ", ".join(repr(v) for v in engine.voices[:12])
    more = f" (and {len(engine.voices) - 12} more)" if len(engine.voices) > 12 else ""
    raise BadRequestError(
        f"Unknown voice '{requested}'. Use one of OpenAI's voice names "
        f"({', '.join(OPENAI_VOICES)}), which map to the served voice(s), or a voice of "
        f"model '{engine.model_id}': {own}{more}.",
        param="voice",
        code="invalid_value",
    )


async def encoded_audio(
    engine: SpeechEngine, text: str, voice: str, speed: float, encoder
) -> AsyncIterator[bytes]:
    """Synthesise sentence by sentence, time-stretch, encode; yield non-empty byte chunks.

    The format header goes out with the first sentence. Encoding runs on worker threads, never
    on the event loop. Closing this iterator stops synthesis before the next sentence.
    """
    sentences = engine.stream(text, voice)
    pending = encoder.start()
    finished = False
    try:
        async for samples in sentences:
            if speed != 1.0:
                samples = await asyncio.to_thread(time_stretch, samples, engine.sample_rate,
                                                  speed)
            data = pending + await asyncio.to_thread(encoder.push, samples)
            pending = b""
            if data:
                yield data
        data = pending + await asyncio.to_thread(encoder.finish)
        finished = True
        if data:
            yield data
    except (APIError, EngineRequestError):
        raise
    except Exception as exc:
        raise synthesis_error(exc) from exc
    finally:
        await sentences.aclose()  # type: ignore[attr-defined]
        if not finished:
            encoder.close()


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


def synthesis_error(exc: Exception) -> EngineError:
    log.exception("speech synthesis failed")
    return EngineError(f"Speech synthesis failed: {type(exc).__name__}: {exc}")
