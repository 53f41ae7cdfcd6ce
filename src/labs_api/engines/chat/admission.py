"""Requests on their way into a batching chat engine: the bounded waiting queue (503 past its
bound or its timeout), and the hand-over of generated chunks to the request's event loop.

The unit of admission is a *group*: the ``n`` choices of one chat request, or the prompts x
``n`` of a legacy completion. A group is admitted as a whole (its generations count one by one
against the queue bound, and either all of them enter the queue or none does), and it ends as a
whole: when one member fails, or the consumer stops listening, every member is cancelled, so no
slot keeps decoding for a client that is gone.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from labs_api.engines.chat.base import GenerationChunk, SamplingParams, TokenLogprob
from labs_api.engines.chat.outlet import ChunkOutlet, Outlet
from labs_api.engines.errors import EngineBusy

#: One member of a group: its prompt, its parameters, and (optionally) an engine-specific
#: prepared form of its output constraint (for llama.cpp: a compiled grammar sampler).
GroupItem = tuple[list[int], SamplingParams, Any]


class StepDeliveries:
    """Chunks produced during one decode step, handed to each event loop in one callback.

    Delivered one ``call_soon_threadsafe`` at a time, a step's chunks reach the loop spread over
    several of its turns (the engine thread and the loop take turns at the GIL), so an engine
    worker would send them as several messages. Gathered, they arrive together: one message
    per step for all its slots. Groups with a :class:`ChunkOutlet` send their plain chunks
    through it, one call per outlet per step, without waking the loop.
    """

    _local = threading.local()

    @classmethod
    def gathered(cls) -> _Gathering:
        """``with StepDeliveries.gathered():`` around one step's deliveries."""
        return _GATHERING

    @classmethod
    def _begin(cls) -> None:
        cls._local.pending = {}
        cls._local.direct = {}

    @classmethod
    def _flush(cls) -> None:
        pending, direct = cls._local.pending, cls._local.direct
        cls._local.pending = cls._local.direct = None
        for outlet, items in direct.items():
            cls._send_direct(outlet, items, pending)
        for loop, batch in pending.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # that loop is closed: nobody is listening
                for group, _, _ in batch:
                    group.cancel()

    @staticmethod
    def _send_direct(outlet: Outlet, items: list[tuple[RequestGroup, tuple[int, Any]]],
                     pending: dict[Any, list[Any]]) -> None:
        sendable = [(group.outlet.key, item) for group, item in items
                    if group.outlet is not None]
        if len(sendable) == len(items) and outlet.send_from_thread(sendable):
            return
        # The outlet cannot take them: they go by the loop, ahead of the same groups' final
        # chunks of this step, and so does everything after them (order is kept that way).
        by_loop: dict[Any, list[Any]] = {}
        for group, item in items:
            group.outlet = None
            by_loop.setdefault(group.loop, []).append((group, group.output, item))
        for loop, batch in by_loop.items():
            pending[loop] = batch + pending.get(loop, [])

    @classmethod
    def add(cls, group: RequestGroup, item: tuple[int, Any]) -> bool:
        """Gather ``item`` if a step is being gathered on this thread; False if not."""
        pending = getattr(cls._local, "pending", None)
        if pending is None:
            return False
        if group.outlet is not None and _plain_chunk(item[1]):
            cls._local.direct.setdefault(group.outlet.outlet, []).append((group, item))
        else:
            pending.setdefault(group.loop, []).append((group, group.output, item))
        return True


class _Gathering:
    """What ``StepDeliveries.gathered`` returns: a class rather than a generator-based
    context manager, since it is entered once per decode step, on the way to sending that
    step's tokens (the deliveries go out on exit, exceptions or not)."""

    __slots__ = ()

    def __enter__(self) -> None:
        StepDeliveries._begin()

    def __exit__(self, *exc_info: object) -> None:
        StepDeliveries._flush()


_GATHERING = _Gathering()


def _plain_chunk(item: Any) -> bool:
    """A chunk that is not a generation's last (nor an error)."""
    return isinstance(item, GenerationChunk) and item.finish_reason is None


def _put_all(batch: list[tuple[Any, asyncio.Queue, tuple[int, Any]]]) -> None:
    for _, queue, item in batch:
        queue.put_nowait(item)


class RequestGroup:
    """The generations of one request: one output queue of ``(index, chunk | error)``."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 outlet: ChunkOutlet | None = None) -> None:
        self.loop = loop
        self.outlet = outlet  # plain chunks go here from the engine's thread (see outlet.py)
        self.output: asyncio.Queue[tuple[int, GenerationChunk | BaseException]] = \
            asyncio.Queue()
        self.members: list[GenerationRequest] = []

    def put(self, index: int, item: GenerationChunk | BaseException) -> bool:
        """Called from the engine's thread. False when nobody is listening any more."""
        if StepDeliveries.add(self, (index, item)):
            return True
        if _plain_chunk(item):
            self.outlet = None  # by the loop from now on, so no later chunk overtakes this one
        try:
            self.loop.call_soon_threadsafe(self.output.put_nowait, (index, item))
            return True
        except RuntimeError:  # the request's event loop is closed
            self.cancel()
            return False

    def cancel(self) -> None:
        for member in self.members:
            member.cancelled = True


@dataclass(eq=False)
class GenerationRequest:
    """One generation: its prompt and parameters, and where its output goes."""

    prompt: list[int]
    params: SamplingParams
    group: RequestGroup
    index: int = 0
    enqueued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    taken: bool = False  # the engine took it from the queue (and owns ``prepared`` now)
    prepared: Any = None  # engine-specific form of params.constraint (owned by the engine)

    def deliver(self, item: GenerationChunk | BaseException) -> None:
        """Called from the engine's thread: hand a chunk (or an error) to the consumer."""
        if not self.group.put(self.index, item):
            self.cancelled = True


@dataclass(frozen=True)
class QueuePolicy:
    max_waiting: int  # generations waiting for capacity; past it a request gets 503 at once
    timeout_s: float  # a request that waited this long for capacity gets 503


class AdmissionQueue:
    """Generations waiting for a place in the batch. Thread-safe; ``wakeup`` wakes the engine.

    ``release`` (optional) is called, on the consumer's side, with each member's ``prepared``
    value once the group is over, for members that never reached the engine: the engine
    frees what it prepared for the others itself.
    """

    def __init__(self, policy: QueuePolicy, capacity: int,
                 release: Callable[[Any], None] | None = None) -> None:
        self.policy = policy
        self.capacity = capacity
        self.wakeup = threading.Condition()
        self.release = release
        self._waiting: collections.deque[GenerationRequest] = collections.deque()

    def submit(self, prompt: list[int], params: SamplingParams, has_room: Callable[[], bool],
               grammar: Any = None) -> AsyncIterator[GenerationChunk]:
        """One generation on its own (a group of one); 503 at once when the queue is full."""
        group = self.submit_group([(prompt, params, grammar)],
                                  lambda: 1 if has_room() else 0)
        return _single(group)

    def submit_group(self, items: list[GroupItem], free_slots: Callable[[], int],
                     outlet: ChunkOutlet | None = None) -> GroupStream:
        """Queue every generation of a request, or none: 503 at once when they do not all
        fit in the free slots plus the room left in the queue. With ``outlet``, the plain
        chunks go there from the engine's thread and the stream yields only the last chunk
        of each generation."""
        group = RequestGroup(asyncio.get_running_loop(), outlet)
        group.members = [GenerationRequest(prompt, params, group, index, prepared=prepared)
                         for index, (prompt, params, prepared) in enumerate(items)]
        with self.wakeup:
            waiting = self.waiting_count()
            if waiting + len(items) - free_slots() > self.policy.max_waiting:
                self._release_unstarted(group)
                raise EngineBusy(
                    f"Server busy: this request asks for {len(items)} generation(s); "
                    f"{free_slots()} of {self.capacity} generation slots are free and "
                    f"{max(0, self.policy.max_waiting - waiting)} more may wait in the queue. "
                    "Retry shortly.",
                    retry_after=max(1, min(30, int(self.policy.timeout_s // 10))),
                    code="server_overloaded",
                )
            self._waiting.extend(group.members)
            self.wakeup.notify()
        return self._consume(group)

    def _consume(self, group: RequestGroup) -> GroupStream:
        return GroupStream(self, group)

    def _close(self, group: RequestGroup) -> None:
        """The consumer is done with ``group``: stop every member, free the unstarted."""
        with self.wakeup:
            group.cancel()
            self._waiting = collections.deque(r for r in self._waiting if not r.cancelled)
            self._release_unstarted(group)
            self.wakeup.notify()

    def _release_unstarted(self, group: RequestGroup) -> None:
        """Free what was prepared for members the engine never took (with ``wakeup`` held
        or before the group was queued)."""
        for member in group.members:
            if member.prepared is not None and not member.taken:
                if self.release is not None:
                    self.release(member.prepared)
                member.prepared = None

    def waiting_count(self) -> int:
        return sum(1 for r in self._waiting if not r.cancelled)

    def has_waiting(self) -> bool:
        """Whether ``take`` has anything to look at (cancelled requests included: it drops
        them). Cheap enough to ask before every decode step."""
        return bool(self._waiting)

    def take(self, count: int,
             fits: Callable[[GenerationRequest], bool] | None = None,
             ) -> list[GenerationRequest]:
        """Up to ``count`` live generations, oldest first; expired ones get their 503 here
        (which fails their whole group). Call with ``wakeup`` held, from the engine's thread.
        ``fits`` (optional) says whether the engine has room for one more (it may count what
        it was offered); the first that does not fit stops the taking, so a large request is
        not passed over for ever by small ones."""
        now = time.monotonic()
        taken: list[GenerationRequest] = []
        kept: collections.deque[GenerationRequest] = collections.deque()
        blocked = False
        for request in self._waiting:
            if request.cancelled:
                continue
            if len(taken) < count and not blocked and (fits is None or fits(request)):
                request.taken = True
                taken.append(request)
                continue
            blocked = True
            if now - request.enqueued_at > self.policy.timeout_s:
                request.group.cancel()
                request.deliver(EngineBusy(
                    f"Server busy: no generation slot became free within "
                    f"{self.policy.timeout_s:g} s. Retry shortly.",
                    retry_after=2, code="queue_timeout"))
            else:
                kept.append(request)
        self._waiting = collections.deque(r for r in kept if not r.cancelled)
        return taken

    def fail_all(self, error: BaseException) -> None:
        with self.wakeup:
            for request in self._waiting:
                request.deliver(error)
            self._waiting.clear()


class GroupStream:
    """What a group's consumer iterates: ``(index, chunk)`` until every member finished. An
    error of one member raises (and stops the others); ``aclose`` stops them all, even if
    iteration never began (an async generator's ``aclose`` would skip its cleanup then)."""

    def __init__(self, queue: AdmissionQueue, group: RequestGroup) -> None:
        self._queue = queue
        self._group = group
        self._unfinished = len(group.members)
        self._closed = False

    def __aiter__(self) -> GroupStream:
        return self

    async def __anext__(self) -> tuple[int, GenerationChunk]:
        if self._closed or not self._unfinished:
            await self.aclose()
            raise StopAsyncIteration
        try:
            index, item = await self._group.output.get()
        except BaseException:
            await self.aclose()
            raise
        if isinstance(item, BaseException):
            await self.aclose()
            raise item  # one member failed: the whole request fails
        if item.finish_reason is not None:
            self._unfinished -= 1
        return index, item

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue._close(self._group)


async def _single(group: GroupStream,
                  ) -> AsyncIterator[GenerationChunk]:
    try:
        async for _, chunk in group:
            yield chunk
    finally:
        await group.aclose()  # type: ignore[attr-defined]


def deliver_final(request: GenerationRequest, text: str, reason: str, completion_tokens: int,
                  logprobs: list[TokenLogprob] | None = None, cached_tokens: int = 0) -> None:
    """The last chunk of a generation: remaining text, finish reason and token counts."""
    request.deliver(GenerationChunk(text=text, finish_reason=reason,  # type: ignore[arg-type]
                                    prompt_tokens=len(request.prompt),
                                    completion_tokens=completion_tokens, logprobs=logprobs,
                                    cached_tokens=cached_tokens))
