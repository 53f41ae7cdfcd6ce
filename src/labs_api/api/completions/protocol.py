"""Request and response schemas of the legacy ``POST /v1/completions``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labs_api.api.chat.protocol import (
    MAX_CHOICES,
    MAX_STOP_SEQUENCES,
    PromptTokensDetails,
    StreamOptions,
    check_stop,
    parse_logit_bias,
)
from labs_api.api.request_model import RequestModel, keep_alive_field
from labs_api.engines.chat.base import SamplingParams
from labs_api.keep_alive import KeepAlive
from labs_api.settings import Settings

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Prompt = str | list[str] | list[int] | list[list[int]]
MAX_PROMPTS = 16
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint


class CompletionRequest(RequestModel):
    """OpenAI's legacy completion fields. Unknown fields, and ``suffix``, are rejected (422)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    keep_alive: KeepAlive | None = keep_alive_field()
    prompt: Prompt = Field(description="Text, a list of texts, or token ids")
    max_tokens: int | None = Field(None, ge=1, description="Default 16, as OpenAI")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="Non-standard; 0 = off")
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    best_of: int | None = Field(None, ge=1, description="Only equal to n (no reranking)")
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    stop: str | list[str] | None = Field(
        None, description=f"A stop sequence, or up to {MAX_STOP_SEQUENCES}")
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    seed: int | None = None
    user: str | None = None
    suffix: None = Field(None, description="Not supported (insertion needs a FIM model)")

    _check_stop = field_validator("stop")(check_stop)

    @model_validator(mode="after")
    def _check(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of other than n is not supported (no reranking)")
        prompts = self.prompts()
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("prompt must not be empty")
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        if self.echo and self.stream:
            raise ValueError("echo is not supported with stream")
        parse_logit_bias(self.logit_bias)
        return self

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a text, or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [prompt]  # type: ignore[list-item]
        return list(prompt)  # type: ignore[arg-type]

    def to_sampling_params(self, settings: Settings) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=settings.temperature if self.temperature is None else self.temperature,
            top_p=settings.top_p if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            stop=stop,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed,
            logit_bias=parse_logit_bias(self.logit_bias),
            logprobs=self.logprobs,
        )


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage
