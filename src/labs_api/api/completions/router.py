"""The HTTP face of legacy completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from labs_api.api.chat.router import SSE_HEADERS
from labs_api.api.completions.protocol import CompletionRequest, CompletionResponse
from labs_api.api.completions.serving import CompletionService
from labs_api.api.disconnect import unless_disconnected
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.sse import sse_stream

router = APIRouter(tags=["completions"])


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
    summary="Legacy text completions (OpenAI-compatible; no chat template)",
)
async def create_completion(body: CompletionRequest, request: Request):
    service: CompletionService = request.app.state.completion_service
    if body.stream:
        opened = await unless_disconnected(request, service.open(body))
        if not isinstance(opened, tuple):
            return opened  # the client left while waiting for a slot
        choices, _, prompt_tokens = opened
        return StreamingResponse(sse_stream(service.stream_events(body, choices, prompt_tokens)),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    return await unless_disconnected(request, service.complete(body))
