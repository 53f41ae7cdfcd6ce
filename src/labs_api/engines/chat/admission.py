"""Requests on their way into a batching chat engine: the bounded waiting queue (503 past its
bound or its timeout), and the hand-over of generated chunks to the request's event loop."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from labs_api.engines.chat.base import GenerationChunk, SamplingParams, TokenLogprob
from labs_api.engines.errors import EngineBusy


@dataclass
class GenerationRequest:
    """One generation: its prompt and parameters, and where its output goes."""

    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    output: asyncio.Queue = field(default_factory=asyncio.Queue)
    enqueued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    grammar: str | None = None  # engine-specific form of params.constraint

    def deliver(self, item: GenerationChunk | BaseException) -> None:
        """Called from the engine's thread: hand a chunk (or an error) to the consumer."""
        try:
            self.loop.call_soon_threadsafe(self.output.put_nowait, item)
        except RuntimeError:  # the request's event loop is closed: nobody is listening
            self.cancelled = True


@dataclass(frozen=True)
class QueuePolicy:
    max_waiting: int  # requests waiting for capacity; one more gets 503 at once
    timeout_s: float  # a request that waited this long for capacity gets 503


class AdmissionQueue:
    """Requests waiting for a place in the batch. Thread-safe; ``wakeup`` wakes the engine."""

    def __init__(self, policy: QueuePolicy, capacity: int) -> None:
        self.policy = policy
        self.capacity = capacity
        self.wakeup = threading.Condition()
        self._waiting: collections.deque[GenerationRequest] = collections.deque()

    def submit(self, prompt: list[int], params: SamplingParams, has_room: Callable[[], bool],
               grammar: str | None = None) -> AsyncIterator[GenerationChunk]:
        """Queue a request from the event loop; 503 at once when the queue is full."""
        request = GenerationRequest(prompt, params, asyncio.get_running_loop(), grammar=grammar)
        with self.wakeup:
            waiting = self.waiting_count()
            if waiting >= self.policy.max_waiting and not has_room():
                raise EngineBusy(
                    f"Server busy: all {self.capacity} generation slots are in use and "
                    f"{waiting} requests are already waiting. Retry shortly.",
                    retry_after=max(1, min(30, int(self.policy.timeout_s // 10))),
                    code="server_overloaded",
                )
            self._waiting.append(request)
            self.wakeup.notify()
        return self._consume(request)

    async def _consume(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        try:
            while True:
                item = await request.output.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not request.cancelled:
                request.cancelled = True
                with self.wakeup:
                    self.wakeup.notify()

    def waiting_count(self) -> int:
        return sum(1 for r in self._waiting if not r.cancelled)

    def take(self, count: int) -> list[GenerationRequest]:
        """Up to ``count`` live requests, oldest first; expired ones get their 503 here.
        Call with ``wakeup`` held, from the engine's thread."""
        now = time.monotonic()
        taken: list[GenerationRequest] = []
        kept: collections.deque[GenerationRequest] = collections.deque()
        for request in self._waiting:
            if request.cancelled:
                continue
            if len(taken) < count:
                taken.append(request)
            elif now - request.enqueued_at > self.policy.timeout_s:
                request.deliver(EngineBusy(
                    f"Server busy: no generation slot became free within "
                    f"{self.policy.timeout_s:g} s. Retry shortly.",
                    retry_after=2, code="queue_timeout"))
            else:
                kept.append(request)
        self._waiting = kept
        return taken

    def fail_all(self, error: BaseException) -> None:
        with self.wakeup:
            for request in self._waiting:
                request.deliver(error)
            self._waiting.clear()


def deliver_final(request: GenerationRequest, text: str, reason: str, completion_tokens: int,
                  logprobs: list[TokenLogprob] | None = None) -> None:
    """The last chunk of a generation: remaining text, finish reason and token counts."""
    request.deliver(GenerationChunk(text=text, finish_reason=reason,  # type: ignore[arg-type]
                                    prompt_tokens=len(request.prompt),
                                    completion_tokens=completion_tokens, logprobs=logprobs))
