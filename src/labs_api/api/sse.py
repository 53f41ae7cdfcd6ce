"""Server-sent events as OpenAI streams them: ``data: {json}`` lines, then ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from labs_api.api.disconnect import unless_disconnected
from labs_api.errors import APIError, api_error_for

log = logging.getLogger("labs_api.sse")

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def sse_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Encode ``events``; an error after the first byte is sent in-band, then ``[DONE]``."""
    try:
        async for event in events:
            yield sse_event(event)
    except Exception as exc:  # the status line is already sent: report in the stream
        mapped = api_error_for(exc)
        if mapped is None:
            log.exception("stream failed")
            mapped = APIError(f"Internal error: {type(exc).__name__}")
        elif mapped.status_code >= 500:
            log.error("stream failed: %s", mapped.message)
        yield sse_event(mapped.body())
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE


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
