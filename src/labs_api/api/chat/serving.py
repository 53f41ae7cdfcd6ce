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
    FunctionCallOut,
    ToolCallOut,
    Usage,
)
from labs_api.api.chat.tools import ToolSpec, looks_like_call, parse_call
from labs_api.api.choices import (
    Choice,
    OpenedChoices,
    choice_items,
    collect,
    interleave,
    logprobs_content,
    open_choices,
    usage_counts,
)
from labs_api.engines.chat.base import ChatEngine, SamplingParams
from labs_api.errors import BadRequestError
from labs_api.models import ModelRegistry
from labs_api.settings import Settings


class ChatService:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    async def open(self, request: ChatCompletionRequest) -> OpenedChoices:
        """Find the engine and start the ``n`` generations. Errors (404, 400, 422, 503) raise
        here, before any byte of the response is sent."""
        engine: ChatEngine = await self.registry.engine("chat", request.model,
                                                        request.keep_alive)
        params = request.to_sampling_params(self.settings)
        check_logit_bias(engine, params)
        prompt = await engine.prompt_tokens(request.engine_messages())
        return await open_choices(engine, choice_items(prompt, params, request.n))

    async def open_events(self, request: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        """Start the generations, then hand back their stream of chunk objects."""
        return self.stream_events(request, await self.open(request))

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        opened = await self.open(request)
        choices = await collect(opened)
        tools = request.tool_specs() if request.tool_mode() != "none" else []
        return ChatCompletionResponse(
            id=new_completion_id(),
            created=int(time.time()),
            model=opened.engine.model_id,
            choices=[self._choice(c, tools) for c in choices],
            usage=Usage(**usage_counts(choices[0].prompt_tokens,
                                       [c.completion_tokens for c in choices],
                                       choices[0].cached_tokens)),
        )

    @staticmethod
    def _choice(choice: Choice, tools: list[ToolSpec]) -> ChatChoice:
        logprobs = None if choice.logprobs is None else {
            "content": logprobs_content(choice.logprobs), "refusal": None}
        call = parse_call(choice.text, tools) if tools else None
        if call is not None:
            message = AssistantMessage(content=None, tool_calls=[ToolCallOut(
                id=call.id, function=FunctionCallOut(name=call.name, arguments=call.arguments))])
            return ChatChoice(index=choice.index, message=message, finish_reason="tool_calls",
                              logprobs=logprobs)
        return ChatChoice(index=choice.index, message=AssistantMessage(content=choice.text),
                          finish_reason=choice.finish_reason,  # type: ignore[arg-type]
                          logprobs=logprobs)

    async def stream_events(
        self, request: ChatCompletionRequest, opened: OpenedChoices
    ) -> AsyncIterator[dict[str, Any]]:
        """The chunk objects of a streamed completion: for each choice a role chunk, content
        pieces (or a tool call) and a finish chunk; then, if asked, one usage chunk."""
        completion_id = new_completion_id()
        created = int(time.time())
        model = opened.engine.model_id
        tools = request.tool_specs() if request.tool_mode() != "none" else []

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None,
                  logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                             "finish_reason": finish}],
            }

        for index in range(opened.count):
            yield chunk(index, {"role": "assistant"})
        prompt_tokens = cached_tokens = 0
        completion_tokens: dict[int, int] = {}
        # With tools, an answer that may be a call is held back until it is known.
        held: dict[int, str] = {i: "" for i in range(opened.count)} if tools else {}
        async for index, piece in interleave(opened):
            logprobs = None if piece.logprobs is None else {
                "content": logprobs_content(piece.logprobs), "refusal": None}
            text = piece.text
            if index in held:
                held[index] += text
                text = ""
                if not looks_like_call(held[index]):
                    text = held.pop(index)
            if text or (logprobs and logprobs["content"]):
                yield chunk(index, {"content": text} if text else {}, logprobs=logprobs)
            if piece.finish_reason is None:
                continue
            prompt_tokens = piece.prompt_tokens
            if index == 0:
                cached_tokens = piece.cached_tokens
            completion_tokens[index] = piece.completion_tokens
            finish: str = piece.finish_reason
            if index in held:
                call = parse_call(held[index], tools)
                if call is None:
                    yield chunk(index, {"content": held[index]})
                else:
                    finish = "tool_calls"
                    yield chunk(index, {"tool_calls": [call.as_openai(index=0)]})
            yield chunk(index, {}, finish)
        if request.stream_options and request.stream_options.include_usage:
            final = chunk(0, {})
            final["choices"] = []
            final["usage"] = usage_counts(prompt_tokens, list(completion_tokens.values()),
                                          cached_tokens)
            yield final


def check_logit_bias(engine: ChatEngine, params: SamplingParams) -> None:
    vocab = getattr(engine, "vocab_size", None)
    for token, _ in params.logit_bias:
        if token < 0 or (vocab is not None and token >= vocab):
            raise BadRequestError(f"logit_bias names token {token}, which is not in this "
                                  f"model's vocabulary (0..{(vocab or 1) - 1}).",
                                  param="logit_bias")


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
