"""A Responses request as the chat request it amounts to, so both run on one path.

Input items become chat messages (``function_call`` items an assistant turn's tool calls,
``function_call_output`` items tool turns), function tools become chat tools, ``text.format``
becomes ``response_format``; ``ChatService`` then does the rest (tool prompt, grammar, engine).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from labs_api.api.chat.protocol import ChatCompletionRequest
from labs_api.api.responses.protocol import (
    CreateResponseRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolChoice,
    MessageItem,
)
from labs_api.errors import BadRequestError

Item = MessageItem | FunctionCallItem | FunctionCallOutputItem


def chat_messages(instructions: str | None, items: list[Item]) -> list[dict[str, Any]]:
    """The conversation as chat messages; consecutive function calls form one assistant turn."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and \
                    len(last.get("tool_calls") or []) < 1000:
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id,
                             "content": item.text()})
    return messages


def chat_request(request: CreateResponseRequest, items: list[Item],
                 default_max_tokens: int) -> ChatCompletionRequest:
    """The chat request that generates this response's output."""
    messages = chat_messages(request.instructions, items)
    if not any(m.get("content") or m.get("tool_calls") for m in messages):
        raise BadRequestError("input: there is no text to answer.", param="input")
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_output_tokens or default_max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "user": request.user,
        "parallel_tool_calls": request.parallel_tool_calls,
    }
    tools = request.function_tools()
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters,
            "strict": t.strict}} for t in tools]
        choice = request.tool_choice
        if isinstance(choice, FunctionToolChoice):
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif choice is not None:
            body["tool_choice"] = choice
    fmt = request.text.format if request.text else None
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.name, "schema": fmt.schema_, "description": fmt.description,
            "strict": fmt.strict}}
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error.get("loc", ()))
        raise BadRequestError(f"input: {error.get('msg')} (as chat {where})",
                              param=_param_for(where)) from None


def _param_for(where: str) -> str:
    if where.startswith("tools") or where.startswith("tool_choice"):
        return "tools"
    if where.startswith("response_format"):
        return "text.format"
    return "input"
