"""The HTTP face of speech-to-text: the multipart form in, a transcript (or its SSE stream) out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from labs_api.api.errors_doc import ERROR_RESPONSES, ErrorResponse
from labs_api.api.sse import stream_or_complete
from labs_api.api.transcription.protocol import (
    MAX_FILE_BYTES,
    TranscriptionForm,
    TranslationForm,
)
from labs_api.api.transcription.serving import TranscriptionService

router = APIRouter(tags=["speech-to-text"])

TRANSCRIPTION_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")

AUDIO_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    400: {"model": ErrorResponse, "description": "The file is not readable audio, or too "
          "long; a language or task the model cannot do"},
    413: {"model": ErrorResponse, "description": f"The file is over {MAX_FILE_BYTES} bytes"},
}


def _form_schema(form: type) -> dict[str, Any]:
    """The multipart body for /docs: the form model's fields plus the file."""
    schema = form.model_json_schema(ref_template="#/components/schemas/{model}")
    properties = {"file": {"type": "string", "format": "binary",
                           "description": "The audio file: flac, mp3, mp4, m4a, ogg, opus, "
                           "wav or webm (at most 25 MiB)"}, **schema["properties"]}
    properties.pop("chunking_strategy", None)  # an object in a form: described in the README
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "model"], "properties": properties}}}}}


def _ok(description: str, stream: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {}, "text/plain": {}}
    if stream:
        content["text/event-stream"] = {}
    return {"description": description, "content": content}


@router.post(
    "/v1/audio/transcriptions",
    response_class=Response,
    openapi_extra=_form_schema(TranscriptionForm),
    responses={200: _ok("The transcript in the response format asked for, or with "
                        "stream=true its transcript.text.delta/done events", True),
               **AUDIO_ERRORS},
    summary="Transcription (OpenAI-compatible): audio in, text out; streamed as SSE on request",
)
async def create_transcription(request: Request) -> Any:
    service: TranscriptionService = request.app.state.transcription_service
    job = await service.parse(request, "transcribe")
    return await stream_or_complete(request, job.stream, lambda: service.open_events(job),
                                    lambda: service.complete(job))


@router.post(
    "/v1/audio/translations",
    response_class=Response,
    openapi_extra=_form_schema(TranslationForm),
    responses={200: _ok("The English translation in the response format asked for", False),
               **AUDIO_ERRORS},
    summary="Translation to English (OpenAI-compatible); needs a multilingual model",
)
async def create_translation(request: Request) -> Any:
    service: TranscriptionService = request.app.state.transcription_service
    job = await service.parse(request, "translate")
    return await stream_or_complete(request, False, lambda: service.open_events(job),
                                    lambda: service.complete(job))
