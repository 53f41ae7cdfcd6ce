"""Cheap limits on a request, checked on its decoded JSON before validation or any model work.

Each check counts what the body holds (messages, characters, tools, schema size) in time
proportional to what it counts, and refuses with a 400 that names the field, the limit and the
variable that sets it. They exist so that a request no legitimate client sends (200,000
messages, a 4 MB prompt, a JSON schema that takes seconds to turn into a grammar) costs the
server almost nothing to refuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from labs_api.errors import BadRequestError
from labs_api.settings import Settings

#: Completions: prompts × n generations started by one request (chat's n is 1-8 on its own).
MAX_GENERATIONS = 16
#: Optional properties of one object in a JSON schema. llama-cpp-python's grammar converter
#: spends time that grows with the square of this count (128 take 35 ms, 512 take 0.75 s).
MAX_OPTIONAL_PROPERTIES = 64


class LimitExceededError(BadRequestError):
    code = "limit_exceeded"


@dataclass(frozen=True)
class RequestLimits:
    max_messages: int = 4096
    max_prompt_chars: int = 1_000_000
    max_embedding_chars: int = 4_000_000
    max_tools: int = 128
    max_schema_bytes: int = 65_536
    max_schema_properties: int = 512
    max_schema_enum_values: int = 1024
    max_schema_depth: int = 32

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


def _refuse(param: str, what: str, limit: int, variable: str | None = None,
            per: str = "request") -> None:
    setting = f" ({variable})" if variable else ""
    raise LimitExceededError(f"{param}: {what}; at most {limit} per {per}{setting}.",
                             param=param)


def _chars(value: Any) -> int:
    """Characters in every string value of ``value`` (not its keys)."""
    total, stack = 0, [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            total += len(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return total


def _message_chars(message: Any) -> int:
    """The text of a message: its content (or its parts' text), name, tool calls and ids."""
    if not isinstance(message, dict):
        return 0
    content = message.get("content")
    total = _chars([message.get(k) for k in ("name", "tool_call_id", "tool_calls", "refusal")])
    if isinstance(content, list):
        return total + _chars([p.get("text") for p in content if isinstance(p, dict)])
    return total + _chars(content)


def _text_of(value: Any, param: str, limit: int, variable: str) -> int:
    """Characters of a string or a list of strings (other shapes are left to validation)."""
    if isinstance(value, str):
        chars = len(value)
    elif isinstance(value, list):
        chars = sum(len(item) for item in value if isinstance(item, str))
    else:
        return 0
    if chars > limit:
        _refuse(param, f"{chars} characters of text", limit, variable)
    return chars


def check_chat(body: Any, limits: RequestLimits) -> None:
    if not isinstance(body, dict):
        return
    messages = body.get("messages")
    chars = 0
    if isinstance(messages, list):
        if len(messages) > limits.max_messages:
            _refuse("messages", f"{len(messages)} messages", limits.max_messages,
                    "LABS_MAX_MESSAGES")
        parts = 0
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                parts += len(content)
                if parts > limits.max_messages:
                    _refuse("messages", f"{parts} content parts", limits.max_messages,
                            "LABS_MAX_MESSAGES")  # as many parts as messages, in all
            calls = message.get("tool_calls") if isinstance(message, dict) else None
            if isinstance(calls, list) and len(calls) > limits.max_tools:
                _refuse("messages", f"a message with {len(calls)} tool calls", limits.max_tools,
                        "LABS_MAX_TOOLS", per="message")
        chars = sum(_message_chars(m) for m in messages)
    tools = body.get("tools")
    schemas: list[tuple[str, Any]] = []
    if isinstance(tools, list):
        if len(tools) > limits.max_tools:
            _refuse("tools", f"{len(tools)} tools", limits.max_tools, "LABS_MAX_TOOLS")
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict):
                schemas.append((f"tools.{index}.function.parameters", function.get("parameters")))
        chars += _chars(tools)  # the tools are described to the model in its prompt
    if chars > limits.max_prompt_chars:
        _refuse("messages", f"{chars} characters of text (messages and tools)",
                limits.max_prompt_chars, "LABS_MAX_PROMPT_CHARS")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and isinstance(response_format.get("json_schema"),
                                                        dict):
        schemas.append(("response_format.json_schema.schema",
                        response_format["json_schema"].get("schema")))
    check_schemas(schemas, limits)


def check_completion(body: Any, limits: RequestLimits) -> None:
    if not isinstance(body, dict):
        return
    prompt = body.get("prompt")
    prompts = 1
    if isinstance(prompt, list) and prompt and not all(isinstance(p, int) for p in prompt):
        prompts = len(prompt)
        tokens = sum(len(p) for p in prompt if isinstance(p, list))
    else:
        tokens = len(prompt) if isinstance(prompt, list) else 0
    max_ids = max(1, limits.max_prompt_chars // 4)  # a token is ~4 characters of text
    if tokens > max_ids:
        _refuse("prompt", f"{tokens} token ids", max_ids, "LABS_MAX_PROMPT_CHARS / 4")
    _text_of(prompt, "prompt", limits.max_prompt_chars, "LABS_MAX_PROMPT_CHARS")
    n = body.get("n", 1)
    if isinstance(n, int) and not isinstance(n, bool) and prompts * n > MAX_GENERATIONS:
        raise LimitExceededError(
            f"n: {prompts} prompt(s) × n={n} is {prompts * n} generations; at most "
            f"{MAX_GENERATIONS} per request.", param="n")


def check_embeddings(body: Any, limits: RequestLimits) -> None:
    if isinstance(body, dict):
        _text_of(body.get("input"), "input", limits.max_embedding_chars,
                 "LABS_MAX_EMBEDDING_CHARS")


def check_similarities(body: Any, limits: RequestLimits) -> None:
    if isinstance(body, dict):
        _text_of(body.get("sentences"), "sentences", limits.max_embedding_chars,
                 "LABS_MAX_EMBEDDING_CHARS")


def check_tokenize(body: Any, limits: RequestLimits) -> None:
    if not isinstance(body, dict):
        return
    check_chat(body, limits)  # messages, as a chat request's
    for field in ("content", "prompt"):
        _text_of(body.get(field), field, limits.max_prompt_chars, "LABS_MAX_PROMPT_CHARS")


def check_detokenize(body: Any, limits: RequestLimits) -> None:
    tokens = body.get("tokens") if isinstance(body, dict) else None
    max_ids = max(1, limits.max_prompt_chars // 4)
    if isinstance(tokens, list) and len(tokens) > max_ids:
        _refuse("tokens", f"{len(tokens)} token ids", max_ids, "LABS_MAX_PROMPT_CHARS / 4")


def check_rerank(body: Any, limits: RequestLimits) -> None:
    """Documents (strings or ``{"text"}``) together, against the embedding characters limit;
    their count is left to validation (1000), which names the field."""
    if not isinstance(body, dict):
        return
    for field in ("documents", "texts"):
        documents = body.get(field)
        if isinstance(documents, list) and len(documents) <= 100_000:
            texts = [d.get("text") if isinstance(d, dict) else d for d in documents]
            _text_of(texts, field, limits.max_embedding_chars, "LABS_MAX_EMBEDDING_CHARS")


def check_messages(body: Any, limits: RequestLimits) -> None:
    """Anthropic's Messages: messages and their blocks, text (system, blocks, tool inputs and
    results, tools) and the tools' input schemas, as a chat request's."""
    if not isinstance(body, dict):
        return
    messages = body.get("messages")
    if isinstance(messages, list):
        if len(messages) > limits.max_messages:
            _refuse("messages", f"{len(messages)} messages", limits.max_messages,
                    "LABS_MAX_MESSAGES")
        blocks = sum(len(m["content"]) for m in messages
                     if isinstance(m, dict) and isinstance(m.get("content"), list))
        if blocks > limits.max_messages:
            _refuse("messages", f"{blocks} content blocks", limits.max_messages,
                    "LABS_MAX_MESSAGES")
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > limits.max_tools:
        _refuse("tools", f"{len(tools)} tools", limits.max_tools, "LABS_MAX_TOOLS")
    chars = _chars([messages, body.get("system"), tools])
    if chars > limits.max_prompt_chars:
        _refuse("messages", f"{chars} characters of text (system, messages and tools)",
                limits.max_prompt_chars, "LABS_MAX_PROMPT_CHARS")
    schemas = [(f"tools.{i}.input_schema", t.get("input_schema"))
               for i, t in enumerate(tools if isinstance(tools, list) else [])
               if isinstance(t, dict)]
    output = body.get("output_config")
    if isinstance(output, dict) and isinstance(output.get("format"), dict):
        schemas.append(("output_config.format.schema", output["format"].get("schema")))
    check_schemas(schemas, limits)


def check_schemas(schemas: list[tuple[str, Any]], limits: RequestLimits) -> None:
    """Size of the JSON schemas of one request, together: they become one llama.cpp grammar
    (the tools' are joined in an anyOf), built on the request's path."""
    properties = enum_values = size = 0
    for param, schema in schemas:
        if schema is None:
            continue
        stack: list[tuple[Any, int]] = [(schema, 1)]
        while stack:
            node, depth = stack.pop()
            if not isinstance(node, dict | list):
                continue
            if depth > limits.max_schema_depth:
                _refuse(param, f"a schema nested deeper than {limits.max_schema_depth} levels",
                        limits.max_schema_depth, "LABS_MAX_SCHEMA_DEPTH")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
            if not isinstance(node, dict):
                continue
            props = node.get("properties")
            if isinstance(props, dict):
                properties += len(props)
                required = node.get("required")
                required_set = set(required) if isinstance(required, list) and all(
                    isinstance(r, str) for r in required) else set()
                optional = len(props.keys() - required_set)
                if optional > MAX_OPTIONAL_PROPERTIES:
                    _refuse(param, f"an object with {optional} optional properties",
                            MAX_OPTIONAL_PROPERTIES, per="object (the grammar's cost grows "
                            "with their square; make more of them required)")
            enum = node.get("enum")
            enum_values += (len(enum) if isinstance(enum, list) else 0) + ("const" in node)
        if properties > limits.max_schema_properties:
            _refuse(param, f"{properties} schema properties", limits.max_schema_properties,
                    "LABS_MAX_SCHEMA_PROPERTIES")
        if enum_values > limits.max_schema_enum_values:
            _refuse(param, f"{enum_values} enum and const values",
                    limits.max_schema_enum_values, "LABS_MAX_SCHEMA_ENUM_VALUES")
        size += len(json.dumps(schema, ensure_ascii=False))
        if size > limits.max_schema_bytes:
            _refuse(param, f"{size} characters of JSON schema", limits.max_schema_bytes,
                    "LABS_MAX_SCHEMA_BYTES")


def check_responses(body: Any, limits: RequestLimits) -> None:
    """``POST /v1/responses``: input items and their parts count as chat messages, their text
    (with the instructions and tools) as prompt characters; the tools' and ``text.format``'s
    schemas as chat's."""
    if not isinstance(body, dict):
        return
    items = body.get("input")
    chars = _chars(body.get("instructions"))
    if isinstance(items, list):
        if len(items) > limits.max_messages:
            _refuse("input", f"{len(items)} input items", limits.max_messages,
                    "LABS_MAX_MESSAGES")
        parts = 0
        for item in items:
            if not isinstance(item, dict):
                continue
            for key in ("content", "output"):
                if isinstance(item.get(key), list):
                    parts += len(item[key])
            if parts > limits.max_messages:
                _refuse("input", f"{parts} content parts", limits.max_messages,
                        "LABS_MAX_MESSAGES")
        chars += _chars(items)
    else:
        chars += _chars(items)
    tools = body.get("tools")
    schemas: list[tuple[str, Any]] = []
    if isinstance(tools, list):
        if len(tools) > limits.max_tools:
            _refuse("tools", f"{len(tools)} tools", limits.max_tools, "LABS_MAX_TOOLS")
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("type") == "function":
                schemas.append((f"tools.{index}.parameters", tool.get("parameters")))
        chars += _chars(tools)
    if chars > limits.max_prompt_chars:
        _refuse("input", f"{chars} characters of text (input, instructions and tools)",
                limits.max_prompt_chars, "LABS_MAX_PROMPT_CHARS")
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        schemas.append(("text.format.schema", fmt.get("schema")))
    check_schemas(schemas, limits)


#: The checks of each endpoint with a JSON body, by route path.
CHECKS = {
    "/v1/chat/completions": check_chat,
    "/v1/completions": check_completion,
    "/v1/embeddings": check_embeddings,
    "/v1/similarities": check_similarities,
    "/tokenize": check_tokenize,
    "/detokenize": check_detokenize,
    "/v1/rerank": check_rerank,
    "/v2/rerank": check_rerank,
    "/rerank": check_rerank,
    "/v1/messages": check_messages,
    "/v1/messages/count_tokens": check_messages,
    "/v1/responses": check_responses,
}
