"""The HTTP face of chat completions: parse, call the service, return JSON or a stream."""

from __future__ import annotations

from fastapi import APIRouter, Request

from labs_api.api.chat.protocol import ChatCompletionRequest, ChatCompletionResponse
from labs_api.api.chat.serving import ChatService
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.routing import StrictJSONRoute
from labs_api.api.sse import stream_or_complete

router = APIRouter(tags=["chat"], route_class=StrictJSONRoute)


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
    return await stream_or_complete(request, body.stream, lambda: service.open_events(body),
                                    lambda: service.complete(body))
