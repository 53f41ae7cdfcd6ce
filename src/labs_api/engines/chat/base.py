"""The interface every chat engine implements, and the values that cross it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """How to generate: what a request asked for, with the server's defaults filled in."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int = 0  # 0: no top-k cut
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None


@dataclass
class GenerationChunk:
    """A piece of the answer. The last chunk of a stream has ``finish_reason`` set."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Generation:
    """A whole answer, gathered from the stream."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    pieces: list[str] = field(default_factory=list)


class ChatEngine(ABC):
    """Turns chat messages into a stream of text. Runs the model off the event loop."""

    model_id: str
    context_length: int

    @abstractmethod
    def stream(
        self, messages: list[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        """Yield text as it is generated, ending with a chunk that carries the finish reason.

        Raises ``ContextLengthError`` before the first chunk when the prompt does not fit.
        Closing the iterator early cancels the generation within one token.
        """

    async def generate(self, messages: list[ChatMessage], params: SamplingParams) -> Generation:
        pieces: list[str] = []
        last = GenerationChunk()
        async for chunk in self.stream(messages, params):
            if chunk.text:
                pieces.append(chunk.text)
            last = chunk
        return Generation(
            text="".join(pieces),
            finish_reason=last.finish_reason or "stop",
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            pieces=pieces,
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model. The default does nothing."""
