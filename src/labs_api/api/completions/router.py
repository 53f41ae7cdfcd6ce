"""The HTTP face of legacy completions."""

from __future__ import annotations

from fastapi import APIRouter, Request

from labs_api.api.completions.protocol import CompletionRequest, CompletionResponse
from labs_api.api.completions.serving import CompletionService
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.routing import StrictJSONRoute
from labs_api.api.sse import stream_or_complete

router = APIRouter(tags=["completions"], route_class=StrictJSONRoute)


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
    summary="Legacy text completions (OpenAI-compatible; no chat template)",
)
async def create_completion(body: CompletionRequest, request: Request):
    service: CompletionService = request.app.state.completion_service
    return await stream_or_complete(request, body.stream, lambda: service.open_events(body),
                                    lambda: service.complete(body))
