"""Request and response schemas of Anthropic's Messages API, as far as this server honours it.

Fields we cannot honour are refused (422) by name; ``cache_control`` marks and ``metadata``
are accepted and ignored (the prefix cache works without marks; nothing is stored).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labs_api.api.chat.protocol import MAX_STOP_SEQUENCES
from labs_api.api.request_model import RequestModel

CacheControl = dict[str, Any] | None


class TextBlock(RequestModel):
    type: Literal["text"]
    text: str
    cache_control: CacheControl = None


class ToolUseBlock(RequestModel):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=256)
    input: dict[str, Any]
    cache_control: CacheControl = None


class ToolResultBlock(RequestModel):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: str | list[TextBlock] | None = None
    is_error: bool = False
    cache_control: CacheControl = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(block.text for block in self.content)


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class MessageIn(RequestModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolIn(RequestModel):
    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl = None


class ToolChoiceAuto(RequestModel):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(RequestModel):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(RequestModel):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(RequestModel):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone,
                       Field(discriminator="type")]


class JsonOutputFormat(RequestModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(RequestModel):
    """Structured output only (``effort`` is for reasoning models: a 422)."""

    format: JsonOutputFormat | None = None


class Metadata(RequestModel):
    user_id: str | None = None


class ConversationFields(RequestModel):
    """What count_tokens and messages share: the prompt."""

    model: str = Field(min_length=1, description="A served chat model (see GET /v1/models)")
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoice | None = None
    cache_control: CacheControl = None  # accepted, ignored: the prefix cache needs no marks

    @model_validator(mode="after")
    def _choice_needs_tools(self) -> ConversationFields:
        if self.tool_choice is not None and self.tool_choice.type != "none" and not self.tools:
            raise ValueError("tool_choice needs tools")
        return self

    def system_text(self) -> str:
        if self.system is None:
            return ""
        if isinstance(self.system, str):
            return self.system
        return "\n".join(block.text for block in self.system)


class MessagesRequest(ConversationFields):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{
            "model": "SmolLM2-135M-Instruct", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Hello!"}]}]},
    )

    max_tokens: int = Field(ge=1, description="Most tokens to generate (required)")
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, max_length=MAX_STOP_SEQUENCES)
    stream: bool = False
    metadata: Metadata | None = None
    output_config: OutputConfig | None = Field(
        None, description="format: JSON valid against a schema (constrained decoding)")


class CountTokensRequest(ConversationFields):
    pass


class TextOut(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseOut(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class MessageUsage(BaseModel):
    input_tokens: int = Field(description="Prompt tokens not read from the prefix cache")
    output_tokens: int
    cache_read_input_tokens: int = Field(0, description="Prompt tokens reused from the cache")
    cache_creation_input_tokens: int = 0


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextOut | ToolUseOut]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: MessageUsage


class CountTokensResponse(BaseModel):
    input_tokens: int
