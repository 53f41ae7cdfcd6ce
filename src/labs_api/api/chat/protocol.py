"""Request and response schemas of ``POST /v1/chat/completions``."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from labs_api.api.chat.tools import ToolSpec, call_constraint, with_tools
from labs_api.api.request_model import RequestModel, keep_alive_field
from labs_api.engines.chat.base import ChatMessage, OutputConstraint, SamplingParams
from labs_api.keep_alive import KeepAlive
from labs_api.settings import Settings

MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 8


class TextContentPart(RequestModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class FunctionCallIn(RequestModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: str


class ToolCallIn(RequestModel):
    """A call the assistant made earlier in the conversation."""

    model_config = ConfigDict(extra="forbid")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(RequestModel):
    """One message of the conversation, as OpenAI clients send it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def to_engine(self) -> ChatMessage:
        """As the model sees it: "developer" is "system"; an assistant's tool calls are the
        JSON it was asked to write; a tool result is a user turn that says what it is."""
        if self.role == "developer":
            return ChatMessage("system", self.text())
        if self.role == "tool":
            return ChatMessage("user", f"Result of tool call {self.tool_call_id or ''}: "
                                       f"{self.text()}")
        if self.role == "assistant" and self.tool_calls:
            calls = [json.dumps({"name": c.function.name,
                                 "arguments": _arguments(c.function.arguments)})
                     for c in self.tool_calls]
            return ChatMessage("assistant", "\n".join([self.text(), *calls]).strip())
        return ChatMessage(role=self.role, content=self.text())


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class FunctionDef(RequestModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(RequestModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(RequestModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class NamedToolChoice(RequestModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(RequestModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class JsonSchemaFormat(RequestModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(RequestModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class JsonObjectFormat(RequestModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class JsonSchemaResponseFormat(RequestModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat,
                           Field(discriminator="type")]


def output_constraint(response_format: ResponseFormat | None) -> OutputConstraint | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return OutputConstraint("json_object")
    return OutputConstraint("json_schema", response_format.json_schema.schema_ or {})


def check_stop(value: str | list[str] | None) -> str | list[str] | None:
    """One stop string (of any length), or a list of up to 4 non-empty ones."""
    if isinstance(value, list):
        if len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not s for s in value):
            raise ValueError("stop sequences must not be empty")
    return value


def parse_logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    if not bias:
        return ()
    try:
        return tuple((int(token), value) for token, value in bias.items())
    except ValueError:
        raise ValueError("logit_bias keys must be token ids (integers as strings)") from None


class ChatCompletionRequest(RequestModel):
    """The spec's parameters, plus the OpenAI fields clients commonly send.

    Unknown fields are rejected (422) rather than ignored, so nobody gets a silently
    different result from what they asked for.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "SmolLM2-135M-Instruct",
                    "messages": [{"role": "user", "content": "Hello!"}],
                    "max_tokens": 100,
                    "temperature": 0.7,
                    "stream": False,
                }
            ]
        },
    )

    model: str = Field(min_length=1, description="Model identifier (see GET /v1/models)")
    keep_alive: KeepAlive | None = keep_alive_field()
    messages: list[ChatMessageIn] = Field(min_length=1, description="Conversation messages")
    max_tokens: int | None = Field(None, ge=1, description="Maximum tokens to generate")
    max_completion_tokens: int | None = Field(None, ge=1, description="Alias of max_tokens")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass")
    top_k: int | None = Field(None, ge=0, description="Top-k sampling (non-standard; 0 = off)")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description="Up to 4 stop sequences")
    frequency_penalty: Penalty = 0.0
    presence_penalty: Penalty = 0.0
    seed: int | None = Field(None, description="Same seed and request give the same output")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description=f"Choices to generate (1-{MAX_CHOICES})")
    user: str | None = Field(None, description="End-user id (accepted, not used)")
    logprobs: bool | None = Field(None, description="Return log probabilities of the tokens")
    top_logprobs: int | None = Field(None, ge=0, le=20,
                                     description="Alternatives per token (needs logprobs)")
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None, description="Token id -> bias added to its logit (-100..100)")
    response_format: ResponseFormat | None = Field(
        None, description="text, json_object, or json_schema (constrained decoding)")
    tools: list[ToolDef] | None = Field(
        None, description="Functions to call (at most LABS_MAX_TOOLS, 128 by default)")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="none, auto (default with tools), required, or a named function")
    store: Literal[False] | None = Field(None, description="Accepted as false: nothing is stored")
    parallel_tool_calls: bool | None = Field(
        None, description="Accepted; at most one call is made per choice")

    _check_stop = field_validator("stop")(check_stop)

    @model_validator(mode="after")
    def _check_last_message(self) -> ChatCompletionRequest:
        if all(not m.text() for m in self.messages):
            raise ValueError("messages must contain some text")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        parse_logit_bias(self.logit_bias)
        self._check_tools()
        return self

    def _check_tools(self) -> None:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools must have distinct function names")
        choice = self.tool_choice
        if choice not in (None, "none") and not names:
            raise ValueError("tool_choice needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names '{choice.function.name}', which is not "
                             "among the tools")
        if self.tool_mode() == "forced" and output_constraint(self.response_format):
            raise ValueError("a forced tool call and a JSON response_format cannot be combined")

    def tool_specs(self) -> list[ToolSpec]:
        """The tools the model may call under ``tool_choice`` (only the named one if named)."""
        specs = [ToolSpec(t.function.name, t.function.description,
                          t.function.parameters or {"type": "object", "properties": {}})
                 for t in self.tools or []]
        if isinstance(self.tool_choice, NamedToolChoice):
            specs = [s for s in specs if s.name == self.tool_choice.function.name]
        return specs

    def tool_mode(self) -> Literal["none", "auto", "forced"]:
        if not self.tools or self.tool_choice == "none":
            return "none"
        return "auto" if self.tool_choice in (None, "auto") else "forced"

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def to_sampling_params(self, settings: Settings) -> SamplingParams:
        """The engine parameters: this request's values, the server's defaults elsewhere."""
        max_tokens = self.max_completion_tokens or self.max_tokens or settings.max_new_tokens
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=settings.temperature if self.temperature is None else self.temperature,
            top_p=settings.top_p if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            stop=self.stop_sequences(),
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed,
            logit_bias=parse_logit_bias(self.logit_bias),
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            constraint=(call_constraint(self.tool_specs()) if self.tool_mode() == "forced"
                        else output_constraint(self.response_format)),
        )

    def engine_messages(self) -> list[ChatMessage]:
        messages = [m.to_engine() for m in self.messages]
        if self.tool_mode() != "none":
            messages = with_tools(messages, self.tool_specs())
        return messages


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # prompt tokens reused from the engine's prefix cache


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_tool_calls(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("tool_calls") is None:
            data.pop("tool_calls", None)
        return data


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
