"""The HTTP face of speech: parse, call the service, return a WAV file or an audio stream."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from labs_api.api.disconnect import unless_disconnected
from labs_api.api.errors_doc import ERROR_RESPONSES, ErrorResponse
from labs_api.api.routing import StrictJSONRoute
from labs_api.api.speech.protocol import SpeechRequest, TTSRequest
from labs_api.api.speech.serving import SpeechService
from labs_api.audio import MEDIA_TYPES

router = APIRouter(tags=["speech"], route_class=StrictJSONRoute)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

SPEECH_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    400: {"model": ErrorResponse, "description": "Malformed JSON or an unknown voice"},
}


@router.post(
    "/v1/audio/speech",
    response_class=Response,
    responses={
        200: {
            "content": {media_type: {} for media_type in sorted(set(MEDIA_TYPES.values()))},
            "description": "The audio, streamed sentence by sentence as it is synthesised",
        },
        **SPEECH_ERRORS,
    },
    summary="Speech (OpenAI-compatible): mp3, opus, aac, flac, wav or pcm, streamed",
)
async def create_speech(body: SpeechRequest, request: Request) -> Response:
    service: SpeechService = request.app.state.speech_service
    media_type, chunks = await service.open_stream(body)
    return StreamingResponse(chunks, media_type=media_type, headers=STREAM_HEADERS)


@router.post(
    "/v1/tts",
    response_class=Response,
    responses={
        200: {"content": {"audio/wav": {}}, "description": "A complete 16-bit mono WAV file"},
        **SPEECH_ERRORS,
    },
    summary="Text-to-speech (the spec's extension): text in, WAV out",
)
async def text_to_speech(body: TTSRequest, request: Request) -> Response:
    service: SpeechService = request.app.state.speech_service
    result = await unless_disconnected(request, service.tts_wav(body))
    if isinstance(result, Response):  # the client went away
        return result
    return Response(content=result, media_type="audio/wav")
