"""Server-sent events as OpenAI streams them: ``data: {json}`` lines, then ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from labs_api.errors import APIError, error_body

log = logging.getLogger("labs_api.sse")

DONE = "data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def sse_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Encode ``events``; an error after the first byte is sent in-band, then ``[DONE]``."""
    try:
        async for event in events:
            yield sse_event(event)
    except APIError as exc:
        yield sse_event(exc.body())
    except Exception as exc:  # the status line is already sent: report in the stream
        log.exception("stream failed")
        yield sse_event(error_body(f"Internal error: {type(exc).__name__}", "server_error"))
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE
