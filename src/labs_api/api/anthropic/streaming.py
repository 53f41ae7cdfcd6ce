"""A chat completion's chunk stream as Anthropic's event stream.

``message_start``, ``ping``, then each content block (``content_block_start``, its
``content_block_delta`` events — ``text_delta`` or ``input_json_delta`` — and
``content_block_stop``), then ``message_delta`` with the stop reason and usage, and
``message_stop``. An error after the first byte is an ``error`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from labs_api.api.anthropic.errors import anthropic_error_body
from labs_api.api.anthropic.translate import STOP_REASONS, tool_use_id, usage_of
from labs_api.api.sse import sse_stream, typed_sse_event


async def message_events(chunks: AsyncIterator[dict[str, Any]], *, message_id: str,
                         model: str, prompt_tokens: int) -> AsyncIterator[dict[str, Any]]:
    """Anthropic's events for the chunks of one streamed chat completion (n = 1, with the
    usage chunk at the end). Closing this closes ``chunks``, which stops the generation."""
    try:
        async for event in _events(chunks, message_id, model, prompt_tokens):
            yield event
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def _events(chunks: AsyncIterator[dict[str, Any]], message_id: str, model: str,
                  prompt_tokens: int) -> AsyncIterator[dict[str, Any]]:
    yield {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": 0}}}
    yield {"type": "ping"}
    index = -1
    open_block: str | None = None
    finish = "stop"

    def close() -> dict[str, Any]:
        return {"type": "content_block_stop", "index": index}

    async for chunk in chunks:
        usage = chunk.get("usage")
        if usage is not None:
            if open_block is not None:
                yield close()
                open_block = None
            counted = usage_of(usage["prompt_tokens"], usage["completion_tokens"],
                               usage.get("prompt_tokens_details", {}).get("cached_tokens", 0))
            yield {"type": "message_delta",
                   "delta": {"stop_reason": STOP_REASONS.get(finish, "end_turn"),
                             "stop_sequence": None},
                   "usage": counted.model_dump()}
            yield {"type": "message_stop"}
            return
        for choice in chunk.get("choices", []):
            delta = choice.get("delta", {})
            text = delta.get("content")
            if text:
                if open_block != "text":
                    if open_block is not None:
                        yield close()
                    index += 1
                    open_block = "text"
                    yield {"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}}
                yield {"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": text}}
            for call in delta.get("tool_calls") or []:
                if open_block is not None:
                    yield close()
                index += 1
                open_block = "tool_use"
                yield {"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": tool_use_id(call["id"]),
                    "name": call["function"]["name"], "input": {}}}
                yield {"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": call["function"]["arguments"]}}
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]


async def event_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Encode ``events`` as SSE; an error once the response has begun is an ``error`` event."""
    async for line in sse_stream(events, encode=typed_sse_event, done=None, what="messages stream",
                                 error_event=lambda error: anthropic_error_body(
                                     error.status_code, error.message)):
        yield line
