"""Request and response schemas of ``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labs_api.engines.chat.base import ChatMessage, SamplingParams
from labs_api.settings import Settings

MAX_STOP_SEQUENCES = 4


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
    n: Literal[1] = Field(1, description="Number of choices (only 1 is supported)")
    user: str | None = Field(None, description="End-user id (accepted, not used)")
    logprobs: Literal[False] | None = Field(None, description="Log probabilities (unsupported)")

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
    logprobs: Any | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
