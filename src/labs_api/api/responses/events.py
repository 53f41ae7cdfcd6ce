"""A streamed response, event for event as OpenAI sends it.

``response.created`` and ``response.in_progress``; for a message ``output_item.added``,
``content_part.added``, ``output_text.delta``..., ``output_text.done``, ``content_part.done``,
``output_item.done``; for a function call ``output_item.added``,
``function_call_arguments.delta`` / ``.done``, ``output_item.done``; then
``response.completed`` (or ``response.incomplete``), carrying the whole output. An error after
the start is an ``error`` event followed by ``response.failed``. Every event has ``type`` and
an increasing ``sequence_number``; on the wire each is an SSE ``event:`` line and a ``data:``
line, with no ``[DONE]`` (OpenAI sends none for this API).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from labs_api.api.chat.tools import looks_like_call, parse_call
from labs_api.api.choices import OpenedChoices, interleave
from labs_api.api.responses import objects
from labs_api.api.sse import in_band_error, typed_sse_event

if TYPE_CHECKING:
    from labs_api.api.responses.serving import Prepared, ResponsesService


async def encoded(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield typed_sse_event(event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


class _Sequence:
    def __init__(self) -> None:
        self.number = -1

    def __call__(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.number += 1
        return {"type": kind, "sequence_number": self.number, **fields}


class _Message:
    """The assistant message being streamed, as one output item with one text part."""

    def __init__(self, output_index: int) -> None:
        self.id = objects.new_id("msg")
        self.output_index = output_index
        self.text = ""

    def where(self) -> dict[str, Any]:
        return {"item_id": self.id, "output_index": self.output_index, "content_index": 0}


async def response_events(service: ResponsesService, prepared: Prepared,
                          opened: OpenedChoices) -> AsyncIterator[dict[str, Any]]:
    event = _Sequence()
    response = objects.ResponseObject(prepared.request, opened.engine.model_id)
    tools = prepared.tools()
    yield event("response.created", response=response.as_dict())
    yield event("response.in_progress", response=response.as_dict())
    message: _Message | None = None
    held: str | None = "" if tools else None  # an answer that may be a call waits
    final = None
    try:
        async for _, piece in interleave(opened):
            text = piece.text
            if held is not None:
                held += text
                text = ""
                if not looks_like_call(held):
                    text, held = held, None
            if text:
                if message is None:
                    message = _Message(len(response.output))
                    for opening in _open_message(event, message):
                        yield opening
                message.text += text
                yield event("response.output_text.delta", **message.where(), delta=text,
                            logprobs=[])
            if piece.finish_reason is not None:
                final = piece
        finish = final.finish_reason if final is not None else "stop"
        call = parse_call(held, tools) if held is not None else None
        if call is not None:
            item_id = objects.new_id("fc")
            index = len(response.output)
            item = objects.function_call_item(item_id, call.id, call.name, "", "in_progress")
            yield event("response.output_item.added", output_index=index, item=item)
            yield event("response.function_call_arguments.delta", item_id=item_id,
                        output_index=index, delta=call.arguments)
            yield event("response.function_call_arguments.done", item_id=item_id,
                        output_index=index, name=call.name, arguments=call.arguments)
            done = objects.function_call_item(item_id, call.id, call.name, call.arguments,
                                              "completed")
            response.output.append(done)
            yield event("response.output_item.done", output_index=index, item=done)
        else:
            if message is None:
                message = _Message(len(response.output))
                for opening in _open_message(event, message):
                    yield opening
            if held:  # it looked like a call to the end, and was not one
                message.text += held
                yield event("response.output_text.delta", **message.where(), delta=held,
                            logprobs=[])
            status = "incomplete" if finish == "length" else "completed"
            item = objects.message_item(message.id, message.text, status)
            yield event("response.output_text.done", **message.where(), text=message.text,
                        logprobs=[])
            yield event("response.content_part.done", **message.where(),
                        part=objects.text_part(message.text))
            response.output.append(item)
            yield event("response.output_item.done", output_index=message.output_index,
                        item=item)
        cut = call is None and finish == "length"
        response.finish("incomplete" if cut else "completed", objects.usage(
            final.prompt_tokens if final else 0, final.completion_tokens if final else 0,
            final.cached_tokens if final else 0), "max_output_tokens" if cut else None)
        body = response.as_dict()
        await service.save(prepared, body)
        yield event("response.incomplete" if cut else "response.completed", response=body)
    except Exception as exc:  # the status line is sent: report in the stream
        mapped = in_band_error(exc, "response stream")
        yield event("error", code=mapped.code or mapped.error_type, message=mapped.message,
                    param=mapped.param)
        response.fail("server_error", mapped.message)
        yield event("response.failed", response=response.as_dict())
    finally:
        await opened.aclose()


def _open_message(event: _Sequence, message: _Message) -> list[dict[str, Any]]:
    item = {"id": message.id, "type": "message", "status": "in_progress",
            "role": "assistant", "content": []}
    return [event("response.output_item.added", output_index=message.output_index, item=item),
            event("response.content_part.added", **message.where(),
                  part=objects.text_part(""))]
