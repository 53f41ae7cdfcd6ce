"""Running the ``n`` choices of a completion request on an engine, together.

Shared by chat completions and legacy completions: both ask an engine for ``n`` generations
of one prompt, then either gather them or interleave their chunks by choice index.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from labs_api.engines.chat.base import ChatEngine, GenerationChunk, SamplingParams, TokenLogprob
from labs_api.ops.context import report_first_token, report_generation


@dataclass
class Choice:
    """One finished generation."""

    index: int
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    cached_tokens: int = 0  # of ``prompt_tokens``, those the engine's prefix cache held


@dataclass
class OpenedChoices:
    """The request's generations, each already past its first chunk (so queue errors
    surfaced): one stream of ``(choice index, chunk)`` for all of them."""

    engine: ChatEngine
    count: int = 0
    events: AsyncIterator[tuple[int, GenerationChunk]] | None = None
    group: AsyncIterator[tuple[int, GenerationChunk]] | None = None  # the engine's stream

    async def aclose(self) -> None:
        """Stop every generation (closing ``events`` alone would not, if never iterated)."""
        for stream in (self.events, self.group):
            if stream is not None:
                await stream.aclose()  # type: ignore[attr-defined]


def params_for_choice(params: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index`` of a seeded request uses seed+index: different, yet repeatable."""
    if params.seed is None or index == 0:
        return params
    return dataclasses.replace(params, seed=params.seed + index)


def choice_items(prompt: list[int], params: SamplingParams,
                 n: int) -> list[tuple[list[int], SamplingParams]]:
    """The ``n`` generations of one prompt, as one group for ``open_choices``."""
    return [(prompt, params_for_choice(params, index)) for index in range(n)]


async def open_choices(engine: ChatEngine,
                       items: list[tuple[list[int], SamplingParams]]) -> OpenedChoices:
    """Start the request's generations as one group (admitted, cancelled and failed
    together) and wait for each one's first chunk. Errors (400, 503) raise here, before any
    byte of the response is sent; nothing is left running after an error."""
    started = time.perf_counter()
    group = engine.stream_group(items)
    early: list[tuple[int, GenerationChunk]] = []
    seen: set[int] = set()
    try:
        while len(seen) < len(items):
            index, chunk = await anext(group)
            early.append((index, chunk))
            seen.add(index)
    except StopAsyncIteration:
        pass
    except BaseException:
        await group.aclose()  # type: ignore[attr-defined]
        raise
    report_first_token(engine.model_id, time.perf_counter() - started)
    return OpenedChoices(engine, len(items), _replayed(engine.model_id, early, group), group)


async def _replayed(model_id: str, early: list[tuple[int, GenerationChunk]],
                    rest: AsyncIterator[tuple[int, GenerationChunk]],
                    ) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """The chunks read while opening, then the rest; reports each finished generation."""
    try:
        for event in early:
            _report(model_id, event[1])
            yield event
        async for event in rest:
            _report(model_id, event[1])
            yield event
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


def _report(model_id: str, chunk: GenerationChunk) -> None:
    if chunk.finish_reason is not None:  # metrics and the access log count the tokens
        report_generation(model_id, chunk.prompt_tokens, chunk.completion_tokens)


async def collect(opened: OpenedChoices) -> list[Choice]:
    """Run every generation to the end."""
    pieces: dict[int, list[str]] = {i: [] for i in range(opened.count)}
    logprobs: dict[int, list[TokenLogprob] | None] = dict.fromkeys(range(opened.count))
    last: dict[int, GenerationChunk] = {}
    try:
        async for index, chunk in interleave(opened):
            pieces[index].append(chunk.text)
            if chunk.logprobs is not None:
                logprobs[index] = (logprobs[index] or []) + chunk.logprobs
            last[index] = chunk
    finally:
        await opened.aclose()
    choices = []
    for index in range(opened.count):
        final = last.get(index, GenerationChunk(finish_reason="stop"))
        choices.append(Choice(index, "".join(pieces[index]), final.finish_reason or "stop",
                              final.prompt_tokens, final.completion_tokens, logprobs[index],
                              final.cached_tokens))
    return choices


async def interleave(opened: OpenedChoices) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Chunks of every choice as they come, tagged with the choice index."""
    assert opened.events is not None
    try:
        async for event in opened.events:
            yield event
    finally:
        await opened.aclose()


def usage_counts(prompt_tokens: int, completion_tokens: list[int],
                 cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI counts the prompt once, however many choices; ``cached_tokens`` are the prompt
    tokens the engine's prefix cache held (OpenAI's ``prompt_tokens_details``)."""
    completion = sum(completion_tokens)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": min(cached_tokens, prompt_tokens)}}


def logprobs_content(entries: list[TokenLogprob]) -> list[dict]:
    """OpenAI's ``logprobs.content`` list for chat completions."""
    return [{"token": e.token, "logprob": e.logprob, "bytes": list(e.token_bytes),
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)}
                              for t, lp, b in e.top]} for e in entries]
