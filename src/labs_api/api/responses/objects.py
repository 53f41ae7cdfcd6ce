"""The objects of the Responses API as plain dicts: the response, its output items, usage."""

from __future__ import annotations

import secrets
import time
from typing import Any

from labs_api.api.responses.protocol import CreateResponseRequest, FunctionTool, HostedTool

OMITTED_WHEN_UNSET = ("user", "prompt_cache_key", "safety_identifier", "usage")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [text_part(text)]}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def usage(input_tokens: int, output_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def output_text(output: list[dict[str, Any]]) -> str:
    return "".join(part["text"] for item in output if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


class ResponseObject:
    """One response as it progresses: ``in_progress``, then ``completed`` / ``incomplete`` /
    ``failed``. ``as_dict`` is the object OpenAI sends (every field its schema requires)."""

    def __init__(self, request: CreateResponseRequest, model: str) -> None:
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.request = request
        self.model = model
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete_reason: str | None = None
        self.completed_at: int | None = None

    def finish(self, status: str, usage_: dict[str, Any] | None,
               incomplete_reason: str | None = None) -> None:
        self.status = status
        self.usage = usage_
        self.incomplete_reason = incomplete_reason
        if status == "completed":
            self.completed_at = int(time.time())

    def fail(self, code: str, message: str) -> None:
        self.status = "failed"
        self.error = {"code": code, "message": message}

    def as_dict(self) -> dict[str, Any]:
        r = self.request
        fmt = r.text.format if r.text and r.text.format else None
        reasoning = r.reasoning
        body = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "completed_at": self.completed_at,
            "background": False,
            "error": self.error,
            "incomplete_details": (None if self.incomplete_reason is None
                                   else {"reason": self.incomplete_reason}),
            "instructions": r.instructions,
            "max_output_tokens": r.max_output_tokens,
            "max_tool_calls": r.max_tool_calls,
            "model": self.model,
            "output": list(self.output),
            "output_text": output_text(self.output),
            "parallel_tool_calls": r.parallel_tool_calls is not False,
            "previous_response_id": r.previous_response_id,
            "reasoning": {"effort": reasoning.effort if reasoning else None,
                          "summary": reasoning.summary if reasoning else None},
            "service_tier": "default",
            "store": r.store,
            "temperature": r.temperature,
            "text": {"format": (fmt.model_dump(by_alias=True, exclude_none=True) if fmt
                                else {"type": "text"}), "verbosity": "medium"},
            "tool_choice": _tool_choice(r),
            "tools": [_tool(t) for t in r.tools or []],
            "top_logprobs": 0,
            "top_p": r.top_p,
            "truncation": "disabled",
            "usage": self.usage,
            "user": r.user,
            "metadata": dict(r.metadata or {}),
            "prompt_cache_key": r.prompt_cache_key,
            "safety_identifier": r.safety_identifier,
        }
        for optional in OMITTED_WHEN_UNSET:  # strings in OpenAI's schema, never null
            if body[optional] is None:
                del body[optional]
        return body


def _tool(tool: FunctionTool | HostedTool) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        return {"type": "function", "name": tool.name, "description": tool.description,
                "parameters": tool.parameters, "strict": tool.strict}
    return tool.model_dump(exclude_none=True)


def _tool_choice(request: CreateResponseRequest) -> Any:
    choice = request.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump()
