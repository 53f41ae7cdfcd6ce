"""Request schemas of ``POST /v1/tts`` (the spec's) and ``POST /v1/audio/speech`` (OpenAI's)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from labs_api.api.request_model import RequestModel, keep_alive_field
from labs_api.audio import ResponseFormat
from labs_api.keep_alive import KeepAlive

#: Longest text accepted, in characters (OpenAI's limit for ``input``).
MAX_INPUT_CHARS = 4096

#: OpenAI's built-in voice names. Each one is accepted and mapped to a served voice.
OPENAI_VOICES: tuple[str, ...] = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
    "verse", "marin", "cedar",
)

#: OpenAI's speech model names: tools built for OpenAI send them; they mean the default voice.
OPENAI_SPEECH_MODELS: tuple[str, ...] = (
    "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15",
)


def _check_speakable(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain some text to speak")
    return value


class TTSRequest(RequestModel):
    """The spec's ``POST /v1/tts``: text in, a WAV file out."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Hello, this is AI Labs text-to-speech!"}]},
    )

    text: str = Field(max_length=MAX_INPUT_CHARS,
                      description=f"Text to convert to speech (at most {MAX_INPUT_CHARS} "
                      "characters)")
    model: str | None = Field(None, min_length=1,
                              description="Speech model (default: the served one, see "
                              "GET /v1/models)")

    _speakable = field_validator("text")(_check_speakable)
    keep_alive: KeepAlive | None = keep_alive_field()


class CustomVoice(RequestModel):
    """OpenAI's custom voice reference, ``{"id": "..."}``; the id must name a served voice."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)


class SpeechRequest(RequestModel):
    """OpenAI's ``CreateSpeechRequest``. Unknown fields are rejected (422), as OpenAI does."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "tts-1",
                    "input": "The quick brown fox jumped over the lazy dog.",
                    "voice": "alloy",
                    "response_format": "mp3",
                }
            ]
        },
    )

    model: str = Field(min_length=1, description="A served speech model, or one of OpenAI's "
                       "names (tts-1, tts-1-hd, gpt-4o-mini-tts), which mean the default one")
    keep_alive: KeepAlive | None = keep_alive_field()
    input: str = Field(max_length=MAX_INPUT_CHARS,
                       description=f"Text to speak (at most {MAX_INPUT_CHARS} characters)")
    voice: str | CustomVoice = Field(description="One of OpenAI's voice names (mapped to a "
                                     "served voice), a served voice's own name, or {\"id\": ...}")
    response_format: ResponseFormat = Field("mp3", description="Audio format")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="0.25 to 4.0; 2.0 is twice as fast")
    instructions: str | None = Field(
        None, max_length=MAX_INPUT_CHARS,
        description="Not supported: the served voices cannot follow instructions; only an "
        "empty value is accepted",
    )
    stream_format: Literal["audio"] = Field(
        "audio", description="Only 'audio' (the raw audio stream); 'sse' is not supported"
    )

    _speakable = field_validator("input")(_check_speakable)

    @field_validator("instructions")
    @classmethod
    def _no_instructions(cls, value: str | None) -> str | None:
        if value and value.strip():
            raise ValueError("instructions are not supported by the served voices; "
                             "leave the field out")
        return value

    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, CustomVoice) else self.voice
