"""GET /v1/audio/voices: the voices of every served speech model, as Kokoro-FastAPI and
speaches list them (their names, plus language, sample rate and the OpenAI names mapped on)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.speech.protocol import OPENAI_VOICES
from labs_api.api.speech.serving import SpeechService
from labs_api.models import ModelRegistry

router = APIRouter(tags=["speech"])


class Voice(BaseModel):
    id: str = Field(description="The name to send as `voice`")
    object: Literal["voice"] = "voice"
    name: str
    model: str = Field(description="The speech model that speaks it")
    language: str | None = Field(description="Language code (e.g. en_US), when the model says")
    sample_rate: int = Field(description="Samples per second of its audio")
    openai_voices: list[str] = Field(
        description="OpenAI voice names that are mapped onto this voice")


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Voice]
    voices: list[str] = Field(description="The voice ids alone (Kokoro-FastAPI's shape)")


def openai_aliases(voices: tuple[str, ...], index: int) -> list[str]:
    """The OpenAI names that map onto voice ``index`` (as ``resolve_voice`` maps them)."""
    return [name for position, name in enumerate(OPENAI_VOICES)
            if position % len(voices) == index]


@router.get("/v1/audio/voices", response_model=VoiceList, responses=ERROR_RESPONSES,
            summary="The voices of the served speech models")
async def list_voices(request: Request, model: str | None = Query(
        None, description="Only this speech model's voices")) -> VoiceList:
    registry: ModelRegistry = request.app.state.registry
    service: SpeechService = request.app.state.speech_service
    models = [model] if model is not None else registry.ids("speech")
    data: list[Voice] = []
    for model_id in models:
        engine = await service.engine(model_id)
        languages = getattr(engine, "voice_languages", None) or {}
        for index, voice in enumerate(engine.voices):
            data.append(Voice(id=voice, name=voice, model=engine.model_id,
                              language=languages.get(voice), sample_rate=engine.sample_rate,
                              openai_voices=openai_aliases(engine.voices, index)))
    return VoiceList(data=data, voices=[v.id for v in data])
