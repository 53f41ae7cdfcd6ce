"""The HTTP face of chat completions: parse, call the service, return JSON or a stream."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from labs_api.api.chat.protocol import ChatCompletionRequest, ChatCompletionResponse
from labs_api.api.chat.serving import ChatService
from labs_api.api.choices import OpenedChoices
from labs_api.api.disconnect import unless_disconnected
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.sse import sse_stream

router = APIRouter(tags=["chat"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream"},
        **ERROR_RESPONSES,
    },
    summary="Chat completions (OpenAI-compatible, streaming with stream=true)",
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request):
    service: ChatService = request.app.state.chat_service
    if body.stream:
        opened = await unless_disconnected(request, service.open(body))
        if not isinstance(opened, OpenedChoices):
            return opened  # the client left while waiting for a slot
        events = service.stream_events(body, opened)
        return StreamingResponse(
            sse_stream(events), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return await unless_disconnected(request, service.complete(body))
