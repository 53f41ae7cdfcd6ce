"""Turning transcription and translation requests into engine calls and response bodies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from labs_api.api.transcription import formats
from labs_api.api.transcription.protocol import (
    MAX_FILE_BYTES,
    OPENAI_TRANSCRIPTION_MODELS,
    AudioForm,
    ServerVad,
    TranscriptionForm,
    TranslationForm,
    form_fields,
    reject_unsupported,
)
from labs_api.audio_decode import AudioDecodeError, AudioTooLong, decode_audio
from labs_api.engines.errors import EngineRequestError
from labs_api.engines.transcription.base import (
    Segment,
    Task,
    TranscriptionInfo,
    TranscriptionOptions,
    VadSettings,
)
from labs_api.errors import APIError, BadRequestError, EngineError
from labs_api.models import ModelRegistry
from labs_api.settings import Settings

log = logging.getLogger("labs_api.transcription")


class FileTooLargeError(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "file_too_large"


@dataclass
class Job:
    """One parsed request: what to transcribe, how, and how to answer."""

    task: Task
    form: AudioForm
    engine: Any
    samples: Any
    options: TranscriptionOptions

    @property
    def stream(self) -> bool:
        return bool(getattr(self.form, "stream", False))


class TranscriptionService:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    async def engine(self, model: str | None) -> Any:
        """The engine for ``model``: OpenAI's transcription model names mean the served one.
        Raises 404 for a model that is not served, 503 while it loads, 500 if it failed to."""
        if model in OPENAI_TRANSCRIPTION_MODELS and self.registry.find(model) is None:
            model = None
        return await self.registry.engine("transcription", model)

    async def parse(self, request: Request, task: Task) -> Job:
        """Read and check the form (422), find the model (404/503), check what the model can
        do (400), then read the file (413 past the size limit, 400 if it is not audio)."""
        try:
            form_data = await request.form(max_files=4, max_fields=64)
        except AssertionError as exc:  # python-multipart missing: a deployment error
            raise EngineError(f"Multipart forms cannot be read: {exc}") from exc
        values, files, repeated = form_fields(form_data)
        errors = _file_errors(values, files) + [
            {"type": "repeated", "loc": ("body", name), "msg": "given more than once",
             "input": None} for name in repeated]
        reject_unsupported(values)
        values.pop("file", None)
        for name in ("include", "languages", "keywords", "known_speaker_names",
                     "known_speaker_references"):
            values.pop(name, None)  # empty: nothing asked for
        form_class = TranscriptionForm if task == "transcribe" else TranslationForm
        try:
            form = form_class.model_validate(values)
        except ValidationError as exc:
            errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            form = None
        if errors or form is None:
            raise RequestValidationError(errors)
        engine = await self.engine(form.model)
        options = self._options(task, form, engine)
        samples = await self._read_audio(files[0])
        return Job(task, form, engine, samples, options)

    def _options(self, task: Task, form: AudioForm, engine: Any) -> TranscriptionOptions:
        if task == "translate" and not engine.multilingual:
            raise BadRequestError(
                f"Model '{engine.model_id}' is English-only, so it cannot translate; "
                "translations need a multilingual Whisper model (LABS_STT_MODEL).",
                param="model", code="model_not_multilingual")
        language = getattr(form, "language", None)
        if language is not None and language not in engine.languages:
            known = ", ".join(sorted(engine.languages))
            raise BadRequestError(
                f"Language '{language}' is not supported by model '{engine.model_id}' "
                f"(it knows: {known}).", param="language", code="unsupported_language")
        vad = VadSettings()
        strategy = getattr(form, "chunking_strategy", None)
        if isinstance(strategy, ServerVad):
            vad = VadSettings(threshold=strategy.threshold,
                              min_silence_ms=strategy.silence_duration_ms,
                              speech_pad_ms=strategy.prefix_padding_ms)
        words = "word" in getattr(form, "timestamp_granularities", ())
        return TranscriptionOptions(task=task, language=language, prompt=form.prompt,
                                    temperature=form.temperature, word_timestamps=words,
                                    vad=vad)

    async def _read_audio(self, upload: UploadFile) -> Any:
        if upload.size is not None and upload.size > MAX_FILE_BYTES:
            raise FileTooLargeError(
                f"The file is {upload.size} bytes; at most {MAX_FILE_BYTES} (25 MiB) are "
                "accepted.", param="file")
        data = await upload.read()
        if len(data) > MAX_FILE_BYTES:
            raise FileTooLargeError(f"The file is larger than {MAX_FILE_BYTES} bytes.",
                                    param="file")
        try:
            decoded = await asyncio.to_thread(decode_audio, data,
                                              self.settings.stt_max_audio_seconds)
        except AudioTooLong as exc:
            raise BadRequestError(str(exc), param="file", code="audio_too_long") from exc
        except AudioDecodeError as exc:
            raise BadRequestError(f"{exc} Send audio as flac, mp3, mp4, m4a, ogg, opus, wav "
                                  "or webm.", param="file", code="invalid_audio") from exc
        return decoded.samples

    # -- running ------------------------------------------------------------------------------

    async def _open(self, job: Job) -> tuple[TranscriptionInfo, AsyncIterator[Any]]:
        """Start the engine; errors before the first result (503 busy, 400) raise here."""
        items = job.engine.stream(job.samples, job.options)
        try:
            info = await anext(items)
        except BaseException:
            await items.aclose()
            raise
        return info, items

    async def complete(self, job: Job) -> Response:
        """The whole transcription in the response format asked for."""
        info, items = await self._open(job)
        segments: list[Segment] = []
        try:
            async for segment in items:
                segments.append(segment)
        except (APIError, EngineRequestError):
            raise
        except Exception as exc:
            raise transcription_error(exc) from exc
        finally:
            await items.aclose()
        return self.render(job, info, segments)

    def render(self, job: Job, info: TranscriptionInfo, segments: list[Segment]) -> Response:
        fmt = job.form.response_format
        if fmt == "json":
            return JSONResponse(formats.json_body(info, segments))
        if fmt == "verbose_json":
            language = "english" if job.task == "translate" else \
                job.engine.languages.get(info.language, info.language)
            granularities = getattr(job.form, "timestamp_granularities", ["segment"])
            return JSONResponse(formats.verbose_body(
                info, segments, task=job.task, language_name=language,
                with_segments="segment" in granularities, with_words="word" in granularities))
        body = {"text": formats.text, "srt": formats.srt, "vtt": formats.vtt}[fmt](segments)
        return Response(content=body, media_type=formats.MEDIA_TYPES[fmt])

    async def open_events(self, job: Job) -> AsyncIterator[dict[str, Any]]:
        """OpenAI's stream: a ``transcript.text.delta`` per decoded segment, then
        ``transcript.text.done`` with the whole text. The deltas join into that text."""
        info, items = await self._open(job)
        return self._events(items)

    async def _events(self, items: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
        parts: list[str] = []
        try:
            async for segment in items:
                delta = segment.text if parts else segment.text.lstrip()
                if not delta:
                    continue
                parts.append(delta)
                yield {"type": "transcript.text.delta", "delta": delta}
            yield {"type": "transcript.text.done", "text": "".join(parts).rstrip()}
        except (APIError, EngineRequestError):
            raise
        except Exception as exc:
            raise transcription_error(exc) from exc
        finally:
            await items.aclose()


def _file_errors(values: dict[str, Any], files: list[UploadFile]) -> list[dict[str, Any]]:
    if len(files) == 1:
        return []
    if len(files) > 1:
        msg, kind = "send one file", "too_many_files"
    elif "file" in values:
        msg, kind = "must be an uploaded file (multipart file part with a filename)", "file_type"
    else:
        msg, kind = "Field required", "missing"
    return [{"type": kind, "loc": ("body", "file"), "msg": msg, "input": None}]


def transcription_error(exc: Exception) -> EngineError:
    log.exception("transcription failed")
    return EngineError(f"Transcription failed: {type(exc).__name__}: {exc}")
