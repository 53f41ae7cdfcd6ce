"""Turning a chat request into engine calls and OpenAI-shaped responses."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from labs_api.api.chat.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Usage,
)
from labs_api.engines.chat.base import ChatEngine, GenerationChunk
from labs_api.models import ModelRegistry
from labs_api.settings import Settings


class ChatService:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    async def open_stream(
        self, request: ChatCompletionRequest
    ) -> tuple[ChatEngine, AsyncIterator[GenerationChunk]]:
        """Find the engine and start generating. Errors (404, 503, 400) raise here, before
        any byte of the response is sent."""
        engine: ChatEngine = await self.registry.engine("chat", request.model)
        params = request.to_sampling_params(self.settings)
        chunks = engine.stream(request.engine_messages(), params)
        # Wait for the first piece, so that a request that times out in the queue still gets
        # its 503 as a status code rather than inside a stream that already said 200.
        try:
            first = await anext(chunks)
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        return engine, with_first(first, chunks)

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        engine, chunks = await self.open_stream(request)
        pieces: list[str] = []
        last = GenerationChunk(finish_reason="stop")
        async for chunk in chunks:
            pieces.append(chunk.text)
            last = chunk
        return ChatCompletionResponse(
            id=new_completion_id(),
            created=int(time.time()),
            model=engine.model_id,
            choices=[
                ChatChoice(
                    index=0,
                    message=AssistantMessage(content="".join(pieces)),
                    finish_reason=last.finish_reason or "stop",
                )
            ],
            usage=usage_of(last),
        )

    async def stream_events(
        self, request: ChatCompletionRequest, engine: ChatEngine,
        chunks: AsyncIterator[GenerationChunk],
    ) -> AsyncIterator[dict[str, Any]]:
        """The chunk objects of a streamed completion: role, content pieces, finish, [usage]."""
        completion_id = new_completion_id()
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": engine.model_id,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        yield chunk({"role": "assistant"})
        try:
            async for piece in chunks:
                if piece.text:
                    yield chunk({"content": piece.text})
                if piece.finish_reason is not None:
                    yield chunk({}, piece.finish_reason)
                    if request.stream_options and request.stream_options.include_usage:
                        final = chunk({})
                        final["choices"] = []
                        final["usage"] = usage_of(piece).model_dump()
                        yield final
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


async def with_first(
    first: GenerationChunk, rest: AsyncIterator[GenerationChunk]
) -> AsyncIterator[GenerationChunk]:
    """``first``, then the rest of the stream; closing this closes the engine's stream."""
    try:
        yield first
        if first.finish_reason is None:
            async for chunk in rest:
                yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_of(chunk: GenerationChunk) -> Usage:
    return Usage(
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        total_tokens=chunk.prompt_tokens + chunk.completion_tokens,
    )
