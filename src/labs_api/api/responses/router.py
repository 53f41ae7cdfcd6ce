"""The HTTP face of the Responses API: create (JSON or SSE), retrieve, delete, input items."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from labs_api.api.disconnect import unless_disconnected
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.responses.events import encoded
from labs_api.api.responses.protocol import CreateResponseRequest
from labs_api.api.responses.serving import ResponsesService
from labs_api.api.routing import StrictJSONRoute
from labs_api.api.sse import SSE_HEADERS
from labs_api.errors import BadRequestError
from labs_api.ops.security import bearer_token

router = APIRouter(tags=["responses"], route_class=StrictJSONRoute)

ResponseId = str  # path parameter; looked up as given (an unknown one is a 404)


def owner_of(request: Request) -> str:
    """Whose responses these are: the SHA-256 of the API key when keys are on (the key
    middleware has checked it), else everyone's (empty)."""
    if not request.app.state.responses_keys_on:
        return ""
    token = bearer_token(request.scope) or ""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _service(request: Request) -> ResponsesService:
    return request.app.state.responses_service


@router.post(
    "/v1/responses",
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "The response object, or SSE events when stream"},
               **ERROR_RESPONSES},
    summary="Create a model response (OpenAI's Responses API; streaming with stream=true)",
)
async def create_response(body: CreateResponseRequest, request: Request) -> Any:
    service = _service(request)
    owner = owner_of(request)
    if not body.stream:
        return await unless_disconnected(request, service.create(body, owner))

    async def open_stream() -> Any:
        prepared = await service.prepare(body, owner)
        return service.open_events(prepared, await service.open(prepared))

    events = await unless_disconnected(request, open_stream())
    if isinstance(events, Response):
        return events  # the client left while waiting for a slot
    return StreamingResponse(encoded(events), media_type="text/event-stream",
                             headers=SSE_HEADERS)


@router.get("/v1/responses/{response_id}", responses=ERROR_RESPONSES,
            summary="A stored response")
async def get_response(response_id: ResponseId, request: Request,
                       stream: bool = False) -> Any:
    if stream:
        raise BadRequestError("stream: replaying a stored response as events is not "
                              "supported; omit stream.", param="stream")
    return (await _service(request).retrieve(owner_of(request), response_id)).response


@router.delete("/v1/responses/{response_id}", responses=ERROR_RESPONSES,
               summary="Delete a stored response")
async def delete_response(response_id: ResponseId, request: Request) -> Any:
    return await _service(request).delete(owner_of(request), response_id)


@router.get("/v1/responses/{response_id}/input_items", responses=ERROR_RESPONSES,
            summary="The input items of a stored response, as a paginated list")
async def list_input_items(response_id: ResponseId, request: Request,
                           limit: int = Query(20, ge=1, le=100),
                           order: Literal["asc", "desc"] = "desc",
                           after: str | None = Query(None, max_length=256)) -> Any:
    stored = await _service(request).retrieve(owner_of(request), response_id)
    items = stored.input_items if order == "asc" else stored.input_items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise BadRequestError(f"after: no input item '{after}' in this response.",
                                  param="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return {"object": "list", "data": page, "has_more": len(items) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None}
