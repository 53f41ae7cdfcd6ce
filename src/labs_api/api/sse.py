"""Server-sent events as OpenAI streams them: ``data: {json}`` lines, then ``data: [DONE]``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from labs_api.api.disconnect import unless_disconnected
from labs_api.errors import APIError, api_error_for

log = logging.getLogger("labs_api.sse")

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event, compact UTF-8 JSON (orjson: a token's chunk is encoded without a
    Python-level encoder, which on a busy 2-core machine is a measurable share of a token)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def typed_sse_event(event: dict[str, Any]) -> bytes:
    """An ``event: <type>`` line before the data, as the Responses and Anthropic streams send."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def in_band_error(exc: Exception, what: str) -> APIError:
    """The error to report inside a stream whose status line is already sent, logged once:
    with its traceback when it is a fault of ours, as one line for an engine's 5xx."""
    mapped = api_error_for(exc)
    if mapped is None:
        log.exception("%s failed", what)
        return APIError(f"Internal error: {type(exc).__name__}")
    if mapped.status_code >= 500:
        log.error("%s failed: %s", what, mapped.message)
    return mapped


async def sse_stream(events: AsyncIterator[dict[str, Any]], *,
                     encode: Callable[[dict[str, Any]], bytes] = sse_event,
                     error_event: Callable[[APIError], dict[str, Any]] = lambda error: error.body(),
                     done: bytes | None = DONE,
                     what: str = "stream") -> AsyncIterator[bytes]:
    """Encode ``events``; an error after the first byte is sent in-band (``error_event``),
    then ``done`` if any (OpenAI's ``[DONE]``; Anthropic's stream has none)."""
    try:
        async for event in events:
            yield encode(event)
    except Exception as exc:  # the status line is already sent: report in the stream
        yield encode(error_event(in_band_error(exc, what)))
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if done is not None:
        yield done


async def stream_or_complete(
    request: Request,
    stream: bool,
    open_events: Callable[[], Awaitable[AsyncIterator[dict[str, Any]]]],
    complete: Callable[[], Awaitable[Any]],
) -> Any:
    """The generation endpoints' one response path: with ``stream``, open the events (errors
    still raise as status codes) and send them as SSE; otherwise the whole JSON body. Either
    way a client that leaves first cancels the work."""
    if not stream:
        return await unless_disconnected(request, complete())
    events = await unless_disconnected(request, open_events())
    if isinstance(events, Response):
        return events  # the client left while waiting for a slot
    return StreamingResponse(sse_stream(events), media_type="text/event-stream",
                             headers=SSE_HEADERS)
