"""Anthropic Messages requests as chat completion requests, and chat completion results as
Anthropic messages: the only place the two shapes meet."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import ValidationError

from labs_api.api.anthropic.protocol import (
    ConversationFields,
    MessageResponse,
    MessagesRequest,
    MessageUsage,
    TextBlock,
    TextOut,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    ToolUseOut,
)
from labs_api.api.chat.protocol import ChatCompletionRequest, ChatCompletionResponse
from labs_api.errors import BadRequestError

#: OpenAI's finish reasons as Anthropic's stop reasons. A stop sequence ends a chat completion
#: with "stop", as the end of the turn does; the two are not told apart (README).
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def tool_use_id(openai_id: str) -> str:
    """Anthropic's ``toolu_`` ids for our ``call_`` ids (the same random part)."""
    return "toolu_" + openai_id.removeprefix("call_")


def _messages(request: ConversationFields) -> list[dict[str, Any]]:
    """The conversation in chat completions' terms: the system prompt first; each
    tool_result a "tool" message, each tool_use an assistant tool call."""
    out: list[dict[str, Any]] = []
    system = request.system_text()
    if system:
        out.append({"role": "system", "content": system})
    for message in request.messages:
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in message.content:
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ToolUseBlock):
                calls.append({"id": block.id, "type": "function", "function": {
                    "name": block.name, "arguments": json.dumps(block.input,
                                                                ensure_ascii=False)}})
            elif isinstance(block, ToolResultBlock):
                result = block.text()
                out.append({"role": "tool", "tool_call_id": block.tool_use_id,
                            "content": f"Error: {result}" if block.is_error else result})
        if message.role == "assistant":
            if texts or calls:
                out.append({"role": "assistant", "content": "".join(texts) or None,
                            **({"tool_calls": calls} if calls else {})})
        elif texts:
            out.append({"role": "user", "content": "".join(texts)})
    return out


def _tools(request: ConversationFields) -> dict[str, Any]:
    if not request.tools:
        return {}
    fields: dict[str, Any] = {"tools": [
        {"type": "function", "function": {"name": t.name, "description": t.description,
                                          "parameters": t.input_schema}}
        for t in request.tools]}
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceAny):
        fields["tool_choice"] = "required"
    elif isinstance(choice, ToolChoiceTool):
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif isinstance(choice, ToolChoiceNone):
        fields["tool_choice"] = "none"
    return fields


def to_chat_request(request: ConversationFields, *, stream: bool = False) -> ChatCompletionRequest:
    """The chat completion request that answers ``request``. What the chat path refuses is a
    400 here, with the chat path's reason."""
    body: dict[str, Any] = {"model": request.model, "messages": _messages(request),
                            **_tools(request)}
    if isinstance(request, MessagesRequest):
        body.update(max_tokens=request.max_tokens, temperature=request.temperature,
                    top_p=request.top_p, top_k=request.top_k, stop=request.stop_sequences)
        output = request.output_config.format if request.output_config else None
        if output is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": output.schema_}}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise BadRequestError(f"This request cannot be answered: {where}: {first['msg']}",
                              param=where) from None


def usage_of(prompt_tokens: int, output_tokens: int, cached_tokens: int) -> MessageUsage:
    cached = min(cached_tokens, prompt_tokens)
    return MessageUsage(input_tokens=prompt_tokens - cached, output_tokens=output_tokens,
                        cache_read_input_tokens=cached)


def to_message(response: ChatCompletionResponse) -> MessageResponse:
    choice = response.choices[0]
    content: list[TextOut | ToolUseOut] = []
    if choice.message.content:
        content.append(TextOut(text=choice.message.content))
    for call in choice.message.tool_calls or []:
        content.append(ToolUseOut(id=tool_use_id(call.id), name=call.function.name,
                                  input=json.loads(call.function.arguments)))
    usage = response.usage
    return MessageResponse(
        id=new_message_id(), model=response.model, content=content,
        stop_reason=STOP_REASONS[choice.finish_reason],  # type: ignore[arg-type]
        usage=usage_of(usage.prompt_tokens, usage.completion_tokens,
                       usage.prompt_tokens_details.cached_tokens))
