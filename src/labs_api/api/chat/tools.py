"""Function calling for models whose chat template knows nothing of tools.

The tools are described to the model in a system message, and it is asked to answer a call
with one JSON object ``{"name": ..., "arguments": {...}}``. With ``tool_choice`` "required" or a
named function, decoding is constrained to exactly that JSON (a grammar from the tools'
parameter schemas), so the call always parses. With "auto", the model's answer is a call when
it is such a JSON object naming a known tool, and plain content otherwise.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from labs_api.engines.chat.base import ChatMessage, OutputConstraint

TOOL_PROMPT = (
    "You can call these functions:\n{tools}\n"
    'To call a function, reply with only a JSON object: {{"name": <function name>, '
    '"arguments": <an object of its parameters>}}. Otherwise reply normally.'
)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str | None
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def as_openai(self, index: int | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {"id": self.id, "type": "function",
                                "function": {"name": self.name, "arguments": self.arguments}}
        if index is not None:
            call["index"] = index
        return call


def tools_system_message(tools: list[ToolSpec]) -> ChatMessage:
    described = json.dumps([{"name": t.name, "description": t.description or "",
                             "parameters": t.parameters} for t in tools], indent=1)
    return ChatMessage("system", TOOL_PROMPT.format(tools=described))


def with_tools(messages: list[ChatMessage], tools: list[ToolSpec]) -> list[ChatMessage]:
    """The conversation with the tool description merged into (or placed as) the system turn."""
    note = tools_system_message(tools)
    if messages and messages[0].role == "system":
        merged = ChatMessage("system", f"{messages[0].content}\n\n{note.content}")
        return [merged, *messages[1:]]
    return [note, *messages]


def call_constraint(tools: list[ToolSpec]) -> OutputConstraint:
    """JSON that is a call of one of ``tools`` with arguments valid for its parameters."""
    options = [{"type": "object", "additionalProperties": False,
                "required": ["name", "arguments"],
                "properties": {"name": {"const": t.name},
                               "arguments": t.parameters or {"type": "object"}}}
               for t in tools]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return OutputConstraint("json_schema", schema, param="tool_choice")


def parse_call(text: str, tools: list[ToolSpec]) -> ToolCall | None:
    """The tool call ``text`` makes, if it is one JSON object naming a known tool."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in {t.name for t in tools}:
        return None
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict):
        return None
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=value["name"],
                    arguments=json.dumps(arguments, ensure_ascii=False))


def looks_like_call(text_so_far: str) -> bool:
    """Whether a streamed answer may turn out to be a call (so it must be held back)."""
    stripped = text_so_far.lstrip()
    return not stripped or stripped.startswith("{")
