"""The HTTP face of Anthropic's Messages API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from labs_api.api.anthropic.protocol import (
    CountTokensRequest,
    CountTokensResponse,
    MessageResponse,
    MessagesRequest,
)
from labs_api.api.anthropic.serving import MessagesService
from labs_api.api.anthropic.streaming import event_stream
from labs_api.api.disconnect import unless_disconnected
from labs_api.api.routing import StrictJSONRoute
from labs_api.api.sse import SSE_HEADERS

router = APIRouter(tags=["anthropic"], route_class=StrictJSONRoute)


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    type: str = "error"
    error: AnthropicErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": AnthropicError, "description": what} for status, what in (
        (400, "Invalid request"), (404, "Model not served"), (422, "Unsupported field"),
        (500, "Engine failure"), (503, "Loading or overloaded (Retry-After)"))}


@router.post("/v1/messages", response_model=MessageResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or Anthropic's SSE events when stream"},
                        **ERRORS},
             summary="Anthropic Messages (on the chat model)")
async def create_message(body: MessagesRequest, request: Request):
    service: MessagesService = request.app.state.messages_service
    if not body.stream:
        return await unless_disconnected(request, service.create(body))
    events = await unless_disconnected(request, service.open_events(body))
    if isinstance(events, Response):
        return events  # the client left while waiting for a slot
    return StreamingResponse(event_stream(events), media_type="text/event-stream",
                             headers=SSE_HEADERS)


@router.post("/v1/messages/count_tokens", response_model=CountTokensResponse,
             responses=ERRORS, summary="Anthropic token counting (the prompt's tokens)")
async def count_tokens(body: CountTokensRequest, request: Request):
    service: MessagesService = request.app.state.messages_service
    return await unless_disconnected(request, service.count_tokens(body))
