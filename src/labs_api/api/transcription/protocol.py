"""Request forms of ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``
(OpenAI's ``CreateTranscriptionRequest`` / ``CreateTranslationRequest``, multipart forms).

A form arrives as flat fields: arrays as repeated ``name[]`` fields (what the official clients
send; plain repeated ``name`` works too) and objects as ``name[key]`` fields. ``form_fields``
turns them back into values; the models below then check them like any JSON body, so a bad
or unknown field is a 422 that names it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import FormData, UploadFile

from labs_api.errors import UnsupportedParameterError

#: OpenAI's upload limit for audio files (25 MiB).
MAX_FILE_BYTES = 25 * 1024 * 1024
#: The request body may be this much larger than the file (the other fields, multipart framing).
FORM_OVERHEAD_BYTES = 1024 * 1024
#: Longest prompt accepted; Whisper itself reads only the last 223 tokens of it.
MAX_PROMPT_CHARS = 4096

#: OpenAI's transcription model names: tools built for OpenAI send them; they mean the served
#: transcription model.
OPENAI_TRANSCRIPTION_MODELS: tuple[str, ...] = (
    "whisper-1", "gpt-transcribe", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe-diarize",
)

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
ARRAY_FIELDS = frozenset({"timestamp_granularities", "include", "languages", "keywords",
                          "known_speaker_names", "known_speaker_references"})
OBJECT_FIELDS = frozenset({"chunking_strategy"})

#: Fields of OpenAI's schema the served Whisper cannot honour: a 422 naming them, never ignored.
UNSUPPORTED: dict[str, str] = {
    "include": "token log probabilities ('logprobs') are not offered by the served model",
    "languages": "'languages' is for gpt-transcribe; send one 'language' code instead",
    "keywords": "keyword biasing is not supported; put the words in 'prompt' instead",
    "known_speaker_names": "speaker diarization is not supported",
    "known_speaker_references": "speaker diarization is not supported",
}


class ServerVad(BaseModel):
    """OpenAI's ``VadConfig``: tunes the voice activity detection that finds the speech."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=10_000)
    silence_duration_ms: int = Field(200, ge=0, le=60_000)


class AudioForm(BaseModel):
    """The fields both endpoints share (the file is checked apart: see ``form_fields``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="The served transcription model, or one of "
                       "OpenAI's names (whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe)")
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS,
                               description="Text to guide the style or continue earlier audio")
    response_format: ResponseFormat = Field("json", description="json, text, srt, "
                                            "verbose_json or vtt")
    temperature: float = Field(0.0, ge=0.0, le=1.0, description="0 to 1; 0 decodes by beam "
                               "search and raises the temperature when decoding fails")

    @field_validator("response_format", mode="before")
    @classmethod
    def _no_diarization(cls, value: Any) -> Any:
        if value == "diarized_json":
            raise ValueError("diarized_json needs speaker diarization, which the served "
                             "model does not do; use json, text, srt, verbose_json or vtt")
        return value


class TranscriptionForm(AudioForm):
    """OpenAI's ``CreateTranscriptionRequest`` without its file."""

    language: str | None = Field(None, min_length=2, max_length=16,
                                 description="ISO-639-1 code of the spoken language "
                                 "(default: detected)")
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default_factory=lambda: ["segment"], max_length=2,
        description="With verbose_json: 'segment' and/or 'word' timestamps")
    stream: bool | None = Field(False, description="Send transcript.text.delta events as "
                                "server-sent events while the audio is decoded (json or text)")
    chunking_strategy: Literal["auto"] | ServerVad | None = Field(
        None, description="'auto' or a server_vad object tuning voice activity detection")

    @field_validator("language")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.strip().lower() if value is not None else None

    @field_validator("stream")
    @classmethod
    def _streamable(cls, value: bool | None, info: Any) -> bool:
        response_format = info.data.get("response_format", "json")
        if value and response_format not in ("json", "text"):
            raise ValueError(f"a stream sends transcript.text events; response_format "
                             f"'{response_format}' cannot be streamed (use json or text)")
        return bool(value)

    @field_validator("timestamp_granularities")
    @classmethod
    def _words_need_verbose(cls, value: list[str], info: Any) -> list[str]:
        if "word" in value and info.data.get("response_format") != "verbose_json":
            raise ValueError("word timestamps need response_format 'verbose_json'")
        return list(dict.fromkeys(value))


class TranslationForm(AudioForm):
    """OpenAI's ``CreateTranslationRequest`` without its file."""


def form_fields(form: FormData) -> tuple[dict[str, Any], list[UploadFile], list[str]]:
    """The form's values (arrays and objects rebuilt), its uploaded files, and the names of
    fields sent more than once that take one value."""
    values: dict[str, Any] = {}
    files: list[UploadFile] = []
    repeated: list[str] = []
    for key, value in form.multi_items():
        if key == "file":
            if isinstance(value, UploadFile):
                files.append(value)
            else:
                values["file"] = value  # text where a file belongs: reported by the caller
            continue
        if isinstance(value, UploadFile):
            values[key] = value.filename or "<file>"  # a file where text belongs: 422 below
            continue
        name, _, rest = key.partition("[")
        if name in ARRAY_FIELDS and rest in ("", "]"):
            values.setdefault(name, []).append(value)
        elif name in OBJECT_FIELDS and rest.endswith("]") and rest != "]":
            target = values.setdefault(name, {})
            if isinstance(target, dict):
                target[rest[:-1]] = value
        elif name in OBJECT_FIELDS and rest == "" and value.strip().startswith("{"):
            try:
                values[name] = json.loads(value)
            except ValueError:
                values[name] = value
        elif key in values:
            repeated.append(key)
        elif value != "" or key == "model":
            values[key] = value  # an empty value means "not given" (clients send None so)
    return values, files, repeated


def reject_unsupported(values: dict[str, Any]) -> None:
    """422 for fields of OpenAI's schema that we do not honour (empty ones are harmless)."""
    for name, why in UNSUPPORTED.items():
        given = values.get(name)
        if given and any(str(item).strip() for item in given):
            raise UnsupportedParameterError(f"'{name}' is not supported: {why}.", param=name)
