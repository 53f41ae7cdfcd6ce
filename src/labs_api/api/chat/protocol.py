"""Request and response schemas of ``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labs_api.engines.chat.base import ChatMessage, OutputConstraint, SamplingParams
from labs_api.settings import Settings

MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 8


class TextContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    """One message of the conversation, as OpenAI clients send it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def to_engine(self) -> ChatMessage:
        # "developer" is OpenAI's newer name for "system"; chat templates know "system".
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=self.text())


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class JsonSchemaResponseFormat(BaseModel):
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


def parse_logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    if not bias:
        return ()
    try:
        return tuple((int(token), value) for token, value in bias.items())
    except ValueError:
        raise ValueError("logit_bias keys must be token ids (integers as strings)") from None


class ChatCompletionRequest(BaseModel):
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

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if len(value) > MAX_STOP_SEQUENCES:
                raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
            if any(not s for s in value):
                raise ValueError("stop sequences must not be empty")
        return value

    @model_validator(mode="after")
    def _check_last_message(self) -> ChatCompletionRequest:
        if all(not m.text() for m in self.messages):
            raise ValueError("messages must contain some text")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        parse_logit_bias(self.logit_bias)
        return self

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
            constraint=output_constraint(self.response_format),
        )

    def engine_messages(self) -> list[ChatMessage]:
        return [m.to_engine() for m in self.messages]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
