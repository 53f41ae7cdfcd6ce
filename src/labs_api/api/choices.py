"""Running the ``n`` choices of a completion request on an engine, together.

Shared by chat completions and legacy completions: both ask an engine for ``n`` generations
of one prompt, then either gather them or interleave their chunks by choice index.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

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


@dataclass
class OpenedChoices:
    """The engine's streams, each already past its first chunk (so queue errors surfaced)."""

    engine: ChatEngine
    streams: list[AsyncIterator[GenerationChunk]] = field(default_factory=list)

    async def aclose(self) -> None:
        for stream in self.streams:
            await stream.aclose()  # type: ignore[attr-defined]


def params_for_choice(params: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index`` of a seeded request uses seed+index: different, yet repeatable."""
    if params.seed is None or index == 0:
        return params
    return dataclasses.replace(params, seed=params.seed + index)


async def open_choices(engine: ChatEngine, prompt: list[int], params: SamplingParams,
                       n: int) -> OpenedChoices:
    """Start ``n`` generations and wait for each one's first chunk. Errors (400, 503) raise
    here, before any byte of the response is sent; nothing is left running after an error."""
    opened = OpenedChoices(engine)
    started = time.perf_counter()
    try:
        for index in range(n):
            opened.streams.append(engine.stream_prompt(prompt, params_for_choice(params, index)))
        firsts = await asyncio.gather(*(anext(s) for s in opened.streams))
    except BaseException:
        await opened.aclose()
        raise
    report_first_token(engine.model_id, time.perf_counter() - started)
    opened.streams = [_with_first(engine.model_id, first, rest)
                      for first, rest in zip(firsts, opened.streams, strict=True)]
    return opened


async def _with_first(model_id: str, first: GenerationChunk,
                      rest: AsyncIterator[GenerationChunk]) -> AsyncIterator[GenerationChunk]:
    try:
        last = first
        yield first
        if first.finish_reason is None:
            async for chunk in rest:
                last = chunk
                yield chunk
        if last.finish_reason is not None:  # metrics and the access log count the tokens
            report_generation(model_id, last.prompt_tokens, last.completion_tokens)
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def collect(opened: OpenedChoices) -> list[Choice]:
    """Run every choice to the end, concurrently."""

    async def gather_one(index: int, stream: AsyncIterator[GenerationChunk]) -> Choice:
        pieces: list[str] = []
        logprobs: list[TokenLogprob] | None = None
        last = GenerationChunk(finish_reason="stop")
        async for chunk in stream:
            pieces.append(chunk.text)
            if chunk.logprobs is not None:
                logprobs = (logprobs or []) + chunk.logprobs
            last = chunk
        return Choice(index, "".join(pieces), last.finish_reason or "stop", last.prompt_tokens,
                      last.completion_tokens, logprobs)

    try:
        return list(await asyncio.gather(*(gather_one(i, s)
                                           for i, s in enumerate(opened.streams))))
    finally:
        await opened.aclose()


async def interleave(opened: OpenedChoices) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Chunks of every choice as they come, tagged with the choice index."""
    if len(opened.streams) == 1:
        try:
            async for chunk in opened.streams[0]:
                yield 0, chunk
        finally:
            await opened.aclose()
        return
    queue: asyncio.Queue[tuple[int, GenerationChunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[GenerationChunk]) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put((index, exc))
        finally:
            await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(opened.streams)]
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
        await opened.aclose()


def usage_counts(prompt_tokens: int, completion_tokens: list[int]) -> dict[str, int]:
    """OpenAI counts the prompt once, however many choices."""
    completion = sum(completion_tokens)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def logprobs_content(entries: list[TokenLogprob]) -> list[dict]:
    """OpenAI's ``logprobs.content`` list for chat completions."""
    return [{"token": e.token, "logprob": e.logprob, "bytes": list(e.token_bytes),
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)}
                              for t, lp, b in e.top]} for e in entries]
