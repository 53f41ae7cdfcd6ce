"""The interface every chat engine implements, and the values that cross it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from labs_api.engines.errors import PromptTooLong

#: Prompts up to this many characters are tokenized on the event loop (well under a
#: millisecond); longer ones on a worker thread.
INLINE_TOKENIZE_CHARS = 8192

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class OutputConstraint:
    """Output that must parse: any JSON object, or JSON valid against ``schema``."""

    kind: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    param: str = "response_format"  # the request field that asked for it (for errors)


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
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None  # None: none; N: the chosen token's and N alternatives
    constraint: OutputConstraint | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """The log probability of a generated token, with the most likely alternatives."""

    token: str
    logprob: float
    token_bytes: bytes
    top: tuple[tuple[str, float, bytes], ...] = ()


@dataclass
class GenerationChunk:
    """A piece of the answer. The last chunk of a stream has ``finish_reason`` set."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    cached_tokens: int = 0  # prompt tokens whose KV came from the slot's cache (final chunk)


@dataclass
class Generation:
    """A whole answer, gathered from the stream."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    pieces: list[str] = field(default_factory=list)


class ChatEngine(ABC):
    """Turns chat messages (or plain text) into a stream of text, off the event loop."""

    model_id: str
    context_length: int
    vocab_size: int | None = None

    @abstractmethod
    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        """The prompt tokens of a conversation, through the model's own chat template."""

    @abstractmethod
    def tokenize_text(self, text: str) -> list[int]:
        """The tokens of plain text (legacy completions), with the model's usual BOS."""

    @abstractmethod
    def stream_tokens(
        self, prompt: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        """Yield text as it is generated, ending with a chunk that carries the finish reason.
        Closing the iterator early cancels the generation within one token."""

    async def prompt_tokens(self, messages: list[ChatMessage]) -> list[int]:
        """``tokenize_prompt`` off the event loop: templating and tokenizing a long
        conversation takes long enough to stall every other request. A short one is done
        inline: a thread hop costs more than it (under load, milliseconds of first-token
        latency while the decode threads hold both cores)."""
        if sum(len(m.content) for m in messages) <= INLINE_TOKENIZE_CHARS:
            return self.tokenize_prompt(messages)
        return await asyncio.to_thread(self.tokenize_prompt, messages)

    async def text_tokens(self, text: str) -> list[int]:
        """``tokenize_text`` off the event loop (inline when short, as ``prompt_tokens``)."""
        if len(text) <= INLINE_TOKENIZE_CHARS:
            return self.tokenize_text(text)
        return await asyncio.to_thread(self.tokenize_text, text)

    def tokenize_content(self, text: str, add_special: bool) -> list[int]:
        """Plain text for ``/tokenize``: special-token text parsed as such; ``add_special``
        adds the model's usual BOS (as ``tokenize_text`` does), else none. Engines whose
        tokenizer has special tokens override this; the default is ``tokenize_text``."""
        return self.tokenize_text(text)

    def token_pieces(self, tokens: list[int]) -> list[bytes]:
        """The bytes each token stands for, special tokens included (a piece may be part of
        a UTF-8 character). The default decodes each token on its own."""
        detokenize = getattr(self, "detokenize", None)
        if detokenize is None:
            raise NotImplementedError(f"the {self.model_id} engine cannot detokenize")
        return [str(detokenize([token])).encode("utf-8") for token in tokens]

    async def content_tokens(self, text: str, add_special: bool) -> list[int]:
        """``tokenize_content`` off the event loop."""
        return await asyncio.to_thread(self.tokenize_content, text, add_special)

    async def pieces(self, tokens: list[int]) -> list[bytes]:
        """``token_pieces`` off the event loop."""
        return await asyncio.to_thread(self.token_pieces, tokens)

    def queue_stats(self) -> tuple[int, int] | None:
        """(generations decoding, generations waiting) for metrics; None when not counted."""
        return None

    def check_supported(self, params: SamplingParams) -> None:  # noqa: B027 - optional hook
        """Raise ``UnsupportedParameterError`` for what this engine cannot honour."""

    def stream(
        self, messages: list[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        return self.stream_prompt(self.tokenize_prompt(messages), params)

    def check_prompt(self, prompt: list[int], params: SamplingParams) -> None:
        """400 before anything starts: a field this engine cannot honour, or no room."""
        self.check_supported(params)
        if len(prompt) >= self.context_length:
            raise PromptTooLong(
                f"The prompt is {len(prompt)} tokens; this model's context is "
                f"{self.context_length} tokens, and the reply needs room too.",
                param="messages",
            )

    def stream_prompt(
        self, prompt: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        """Check the prompt fits (400 before anything starts), then generate."""
        self.check_prompt(prompt, params)
        return self.stream_tokens(prompt, params)

    async def stream_group(
        self, items: list[tuple[list[int], SamplingParams]]
    ) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """The generations of one request (its ``n`` choices, or a legacy completion's
        prompts x ``n``) as one stream of ``(index, chunk)``; it ends when every generation
        has sent its finish chunk. They succeed or fail together: an error of one ends the
        stream (and the others), and closing the stream cancels all of them.

        Batching engines override this to admit the group at once; this default runs
        ``stream_prompt`` for each item."""
        for prompt, params in items:
            self.check_prompt(prompt, params)
        streams = [self.stream_prompt(prompt, params) for prompt, params in items]
        queue: asyncio.Queue[tuple[int, GenerationChunk | BaseException | None]] = \
            asyncio.Queue()

        async def pump(index: int, stream: AsyncIterator[GenerationChunk]) -> None:
            try:
                async for chunk in stream:
                    await queue.put((index, chunk))
            except Exception as exc:
                await queue.put((index, exc))
            finally:
                await queue.put((index, None))
                await stream.aclose()  # type: ignore[attr-defined]

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        running = len(tasks)
        try:
            while running:
                index, item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield index, item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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
