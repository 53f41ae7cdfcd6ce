"""Legacy completions: prompts in, text out, on the same engines and choice runner as chat."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from labs_api.api.chat.serving import check_logit_bias
from labs_api.api.choices import (
    OpenedChoices,
    choice_items,
    collect,
    interleave,
    open_choices,
    usage_counts,
)
from labs_api.api.completions.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
)
from labs_api.engines.chat.base import ChatEngine, TokenLogprob
from labs_api.errors import BadRequestError, UnsupportedParameterError
from labs_api.models import ModelRegistry
from labs_api.settings import Settings


class CompletionService:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    async def open(self, request: CompletionRequest) -> tuple[OpenedChoices, list[str], int]:
        """Start ``n`` generations per prompt (choice index = prompt * n + j). Returns them,
        the prompt texts (for echo) and the prompt token count."""
        engine: ChatEngine = await self.registry.engine("chat", request.model,
                                                        request.keep_alive)
        params = request.to_sampling_params(self.settings)
        check_logit_bias(engine, params)
        check_token_ids(engine, request.prompts())
        # What echo puts first: each prompt's text (a 422 here, before anything starts, for
        # token ids the engine cannot turn back into text).
        echoed = await echo_texts(engine, request.prompts()) if request.echo else None
        texts, prompt_tokens = [], 0
        items = []
        for prompt in request.prompts():
            tokens = await engine.text_tokens(prompt) if isinstance(prompt, str) else prompt
            texts.append(prompt if isinstance(prompt, str) else "")
            prompt_tokens += len(tokens)
            items += choice_items(tokens, params, request.n)
        # Every prompt's n choices in one group: admitted (and counted) as generations,
        # cancelled and failed together.
        return await open_choices(engine, items), echoed or texts, prompt_tokens

    async def open_events(self, request: CompletionRequest) -> AsyncIterator[dict[str, Any]]:
        """Start the generations, then hand back their stream of chunk objects."""
        opened, _, prompt_tokens = await self.open(request)
        return self.stream_events(request, opened, prompt_tokens)

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        opened, texts, prompt_tokens = await self.open(request)
        choices = await collect(opened)
        cached = sum(c.cached_tokens for c in choices if c.index % request.n == 0)
        return CompletionResponse(
            id=new_id(), created=int(time.time()), model=opened.engine.model_id,
            choices=[CompletionChoice(
                index=c.index,
                text=(texts[c.index // request.n] if request.echo else "") + c.text,
                finish_reason=c.finish_reason,  # type: ignore[arg-type]
                logprobs=None if c.logprobs is None else legacy_logprobs(c.logprobs),
            ) for c in choices],
            usage=CompletionUsage(**usage_counts(prompt_tokens,
                                                 [c.completion_tokens for c in choices],
                                                 cached)),
        )

    async def stream_events(self, request: CompletionRequest, opened: OpenedChoices,
                            prompt_tokens: int) -> AsyncIterator[dict[str, Any]]:
        completion_id, created, model = new_id(), int(time.time()), opened.engine.model_id
        completion_tokens: dict[int, int] = {}
        cached = 0  # each prompt's first choice tells what the cache held of that prompt

        def chunk(index: int, text: str, finish: str | None,
                  logprobs: list[TokenLogprob] | None) -> dict[str, Any]:
            return {"id": completion_id, "object": "text_completion", "created": created,
                    "model": model,
                    "choices": [{"index": index, "text": text, "finish_reason": finish,
                                 "logprobs": None if logprobs is None
                                 else legacy_logprobs(logprobs)}]}

        async for index, piece in interleave(opened):
            if piece.finish_reason is not None:
                completion_tokens[index] = piece.completion_tokens
                if index % request.n == 0:
                    cached += piece.cached_tokens
            if piece.text or piece.finish_reason is not None:
                yield chunk(index, piece.text, piece.finish_reason, piece.logprobs)
        if request.stream_options and request.stream_options.include_usage:
            yield {"id": completion_id, "object": "text_completion", "created": created,
                   "model": model, "choices": [],
                   "usage": usage_counts(prompt_tokens, list(completion_tokens.values()),
                                         cached)}


async def echo_texts(engine: ChatEngine, prompts: list[str | list[int]]) -> list[str]:
    """What ``echo`` puts before each completion: the prompt's text; a token-id prompt as the
    engine's ``detokenize`` gives it (a coroutine, from a proxy to an engine elsewhere, or a
    plain method, run off the event loop). An engine without it cannot echo token ids."""
    detokenize = getattr(engine, "detokenize", None)
    texts = []
    for prompt in prompts:
        if isinstance(prompt, str):
            texts.append(prompt)
        elif detokenize is None:
            raise UnsupportedParameterError(
                f"echo with a token-id prompt needs the text of the tokens, which the "
                f"'{engine.model_id}' engine cannot give; send the prompt as text",
                param="echo")
        elif inspect.iscoroutinefunction(detokenize):
            texts.append(await detokenize(prompt))
        else:
            texts.append(await asyncio.to_thread(detokenize, prompt))
    return texts


def check_token_ids(engine: ChatEngine, prompts: list[str | list[int]]) -> None:
    """Token-id prompts must name tokens of the model's vocabulary (llama.cpp fails on others)."""
    vocab = getattr(engine, "vocab_size", None)
    for prompt in prompts:
        if isinstance(prompt, str):
            continue
        wrong = [t for t in prompt if t < 0 or (vocab is not None and t >= vocab)]
        if wrong:
            known = f" (0..{vocab - 1})" if vocab is not None else ""
            raise BadRequestError(f"prompt holds token ids that are not in this model's "
                                  f"vocabulary{known}: {wrong[:5]}", param="prompt")


def legacy_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    """The legacy logprobs object: parallel lists, offsets into the generated text."""
    offsets, position = [], 0
    for entry in entries:
        offsets.append(position)
        position += len(entry.token)
    return {"tokens": [e.token for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t: lp for t, lp, _ in e.top} for e in entries],
            "text_offset": offsets}


def new_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"
