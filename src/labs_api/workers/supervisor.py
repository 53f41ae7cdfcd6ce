"""The server's side of an engine worker: starting it, talking to it, noticing that it died or
stalled, failing what it had in hand, and starting it again.

A worker that exits (segfault, abort, kill -9, the kernel's OOM killer) or makes no progress for
``stall_seconds`` while it has work ends every request it held with ``EngineUnavailable``
(503, ``engine_restarting``), and is started again after a back-off. The requests it held are
remembered by their content for a while: one that was in hand at two crashes is answered 500
the second time and refused with 400 from then on, so one poisonous request cannot keep the
engine down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from labs_api.engines.chat.outlet import from_text_event
from labs_api.engines.error_report import ErrorReport
from labs_api.engines.errors import EngineFailed, EngineUnavailable, InvalidRequest
from labs_api.workers import wire
from labs_api.workers.frames import FrameProtocol

log = logging.getLogger("labs_api.workers")

_END = object()


@dataclass(frozen=True)
class WorkerOptions:
    stall_seconds: float = 60.0  # no progress this long while holding work: killed
    first_backoff_s: float = 0.5  # wait before the first restart; doubles per quick crash
    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0  # up this long: the back-off starts again from the first
    max_failed_starts: int = 5  # restarts in a row that fail to load: the model is failed
    crash_memory: int = 1024  # request fingerprints remembered
    crash_memory_s: float = 3600.0
    log_level: str = "info"


class _Mailbox:
    """A stream's items in arrival order, for its one reader: an asyncio.Queue without the
    bookkeeping (no size bound, one waiter), since every token passes through it."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


@dataclass
class _Pending:
    fingerprint: str
    future: asyncio.Future[Any] | None = None  # a call
    mailbox: _Mailbox | None = None  # a stream

    def fail(self, error: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)
        if self.mailbox is not None:
            self.mailbox.put(error)


@dataclass
class _Process:
    """One run of the worker: the child process and its socket's transport; ``ended`` is
    done once the socket has ended."""

    process: asyncio.subprocess.Process
    transport: Any  # asyncio's or uvloop's (not an asyncio.Transport subclass)
    ended: asyncio.Future[None]
    started: float = field(default_factory=time.monotonic)


class CrashMemory:
    """Fingerprints of requests that were in hand when the worker crashed, with a count."""

    def __init__(self, size: int, seconds: float) -> None:
        self.size = size
        self.seconds = seconds
        self._seen: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()

    def count(self, fingerprint: str) -> int:
        entry = self._seen.get(fingerprint)
        if entry is None or time.monotonic() - entry[1] > self.seconds:
            return 0
        return entry[0]

    def add(self, fingerprint: str) -> int:
        count = self.count(fingerprint) + 1
        self._seen[fingerprint] = (count, time.monotonic())
        self._seen.move_to_end(fingerprint)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return count


def fingerprint(method: str, args: tuple[Any, ...]) -> str:
    return hashlib.sha256(pickle.dumps((method, args), protocol=4)).hexdigest()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "lost contact"
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal {-code}"
    return f"exit code {code}"


class EngineWorker:
    """One model's engine in a child process, supervised. ``call`` and ``stream`` are what
    the proxy engine (``labs_api.engines.remote``) uses as its transport."""

    def __init__(self, name: str, kind: str, load: Callable[[], Any], options: WorkerOptions,
                 cpu_work: str | None = None,
                 on_state: Callable[[str, str | None], None] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.load = load
        self.options = options
        self.cpu_work = cpu_work
        self.on_state = on_state or (lambda state, error: None)
        self.state = "starting"
        self.restarts = 0
        self.last_exit: str | None = None
        self.attributes: dict[str, Any] = {}
        self.queue: tuple[int, int] | None = None
        self.frames = 0
        self.events = 0
        self.thread_events = 0  # events the engine's thread sent itself (outlet.py)
        self.crashes = CrashMemory(options.crash_memory, options.crash_memory_s)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._run: _Process | None = None
        self._progress = 0
        self._progress_at = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._updated: list[Callable[[dict[str, Any]], None]] = []
        self._quick_crashes = 0  # crashes in a row, each soon after a start
        self._totals_before = (0, 0, 0)  # frames, events, thread events of earlier runs
        self._stalled = False

    @property
    def pid(self) -> int | None:
        return self._run.process.pid if self._run is not None else None

    def on_attributes(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Called with the engine's attributes each time a new run of the worker is ready."""
        self._updated.append(callback)

    # -- starting ----------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Start the worker and load the engine; returns its attributes, or raises its
        load error (the engine's own exception)."""
        self._run, self.attributes = await self._spawn()
        self._set_state("ready")
        self._watch()
        return self.attributes

    async def _spawn(self) -> tuple[_Process, dict[str, Any]]:
        parent_end, child_end = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "labs_api.workers.child", str(child_end.fileno()),
                pass_fds=(child_end.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            child_end.close()
        loop = asyncio.get_running_loop()
        handshake: asyncio.Queue[Any] = asyncio.Queue()
        transport, frames = await loop.create_connection(
            lambda: FrameProtocol(handshake.put_nowait), sock=parent_end)
        run = _Process(process, transport, loop.create_future())
        transport.write(wire.encode(("init", {
            "name": f"{self.kind} {self.name}", "kind": self.kind, "load": self.load,
            "log_level": self.options.log_level, "cpu_work": self.cpu_work})))
        log.info("started the %s worker for %s (pid %d)", self.kind, self.name, process.pid)
        while True:
            batch = await handshake.get()
            if batch is None:
                code = await process.wait()
                raise EngineFailed(f"The {self.kind} worker for '{self.name}' died while "
                                   f"loading ({describe_exit(code)}).")
            for _, what, payload in batch:
                if what == "ready":
                    early = []  # whatever came after "ready" before the listening starts
                    while not handshake.empty():
                        early.append(handshake.get_nowait())
                    frames.handler = lambda message: self._on_frames(run, message)
                    for message in early:
                        self._on_frames(run, message)
                    return run, payload
                if what == "failed":
                    await self._end(run)
                    assert isinstance(payload, ErrorReport)
                    raise payload.rebuild()

    def _watch(self) -> None:
        assert self._run is not None
        for job in (self._until_ended(self._run), self._watchdog(self._run)):
            task = asyncio.create_task(job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        self.on_state(state, error)

    # -- talking -----------------------------------------------------------------------------

    def _admit(self, method: str, args: tuple[Any, ...]) -> tuple[int, _Pending]:
        if self.state != "ready" or self._run is None:
            raise self._unavailable()
        print_ = fingerprint(method, args)
        if self.crashes.count(print_) >= 2:
            raise InvalidRequest(
                f"This request crashed the {self.kind} engine twice; it is refused so that "
                "the engine stays up for everyone else.", code="request_crashed_engine")
        rid = next(self._ids)
        pending = _Pending(print_)
        if not self._pending:
            self._progress_at = time.monotonic()  # idle until now: nothing was overdue
        self._pending[rid] = pending
        return rid, pending

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._run is not None and not self._run.transport.is_closing():
            self._run.transport.write(wire.encode(message))

    def _unavailable(self) -> EngineUnavailable:
        if self.state == "failed":
            return EngineUnavailable(f"The {self.kind} engine for '{self.name}' failed and "
                                     "could not be started again.", retry_after=30,
                                     code="engine_failed")
        cause = f" after {self.last_exit}" if self.last_exit else ""
        return EngineUnavailable(
            f"The {self.kind} engine for '{self.name}' is restarting{cause}; retry shortly.",
            retry_after=max(1, round(self._backoff() + 1)), code="engine_restarting")

    async def call(self, method: str, *args: Any) -> Any:
        rid, pending = self._admit(method, args)
        pending.future = asyncio.get_running_loop().create_future()
        try:
            self._send(("call", rid, method, args))
            return await pending.future
        except asyncio.CancelledError:
            self._send(("cancel", rid))
            raise
        finally:
            self._pending.pop(rid, None)

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        rid, pending = self._admit(method, args)
        pending.mailbox = mailbox = _Mailbox()
        finished = False
        try:
            self._send(("stream", rid, method, args))
            while True:
                item = await mailbox.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            self._pending.pop(rid, None)
            if not finished:
                self._send(("cancel", rid))

    def queue_stats(self) -> tuple[int, int] | None:
        return self.queue if self.state == "ready" else None

    # -- listening ---------------------------------------------------------------------------

    def _on_frames(self, run: _Process, batch: list[tuple[int, str, Any]] | None) -> None:
        """One frame from the worker (a batch of events), or None: its socket has ended."""
        if batch is None:
            if not run.ended.done():
                run.ended.set_result(None)
            return
        for rid, what, payload in batch:
            if rid == 0:
                self._worker_event(what, payload)
                continue
            self._note_progress()
            pending = self._pending.get(rid)
            if pending is None:
                continue  # given up on already
            if what == "text":  # a streamed chunk of text alone (see outlet.wire_event)
                assert pending.mailbox is not None
                pending.mailbox.put(from_text_event(payload))
            elif what == "item":
                assert pending.mailbox is not None
                pending.mailbox.put(payload)
            elif what == "end":
                assert pending.mailbox is not None
                pending.mailbox.put(_END)
            elif what == "result":
                if pending.future is not None and not pending.future.done():
                    pending.future.set_result(payload)
            elif what == "error":
                pending.fail(payload.rebuild())

    async def _until_ended(self, run: _Process) -> None:
        await run.ended
        if run is self._run:
            await self._crashed(run, await run.process.wait())

    def _worker_event(self, what: str, payload: Any) -> None:
        if what == "beat":
            self.queue = payload["queue"]
            # Totals over every run of the worker (each new process counts from zero).
            self.frames = self._totals_before[0] + payload["frames"]
            self.events = self._totals_before[1] + payload["events"]
            self.thread_events = self._totals_before[2] + payload["thread_events"]
            if payload["progress"] != self._progress:
                self._progress = payload["progress"]
                self._note_progress()

    def _note_progress(self) -> None:
        self._progress_at = time.monotonic()

    async def _watchdog(self, run: _Process) -> None:
        stall = self.options.stall_seconds
        while run is self._run and run.process.returncode is None:
            await asyncio.sleep(min(1.0, stall / 4))
            if self._pending and time.monotonic() - self._progress_at > stall:
                log.error("the %s worker for %s made no progress for %.0f s with %d "
                          "requests in hand; killing it", self.kind, self.name, stall,
                          len(self._pending))
                self._stalled = True
                with contextlib.suppress(ProcessLookupError):
                    run.process.kill()
                return

    # -- crashing and restarting -------------------------------------------------------------

    async def _crashed(self, run: _Process, code: int | None) -> None:
        if self._closing:
            return
        self._run = None
        self._totals_before = (self.frames, self.events, self.thread_events)
        stall = f"no progress for {self.options.stall_seconds:g} s"
        self.last_exit = stall if self._stalled else describe_exit(code)
        self._stalled = False
        held = list(self._pending.values())
        self._pending.clear()
        log.error("the %s worker for %s (pid %d) ended (%s) with %d requests in hand; "
                  "starting it again", self.kind, self.name, run.process.pid, self.last_exit,
                  len(held))
        self._set_state("restarting", f"restarting after {self.last_exit}")
        counts = {p.fingerprint: self.crashes.add(p.fingerprint)
                  for p in {p.fingerprint: p for p in held}.values()}
        for pending in held:
            if counts[pending.fingerprint] >= 2:
                pending.fail(EngineFailed(
                    f"The {self.kind} engine crashed ({self.last_exit}) while serving this "
                    "request, for the second time; the same request will be refused.",
                    code="request_crashed_engine"))
            else:
                pending.fail(EngineUnavailable(
                    f"The {self.kind} engine crashed ({self.last_exit}) while serving this "
                    "request; it is restarting. Retry shortly.",
                    retry_after=max(1, round(self._backoff())), code="engine_restarting"))
        with contextlib.suppress(Exception):
            run.transport.close()
        task = asyncio.create_task(self._restart(time.monotonic() - run.started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _backoff(self, failures: int = 0) -> float:
        """Seconds before the next start: none after a first crash, then doubling for each
        quick crash or failed start in a row."""
        steps = max(0, self._quick_crashes - 1) + failures
        if steps == 0:
            return 0.0
        return min(self.options.max_backoff_s, self.options.first_backoff_s * 2 ** (steps - 1))

    async def _restart(self, uptime: float) -> None:
        stable = uptime > self.options.stable_after_s
        self._quick_crashes = 1 if stable else self._quick_crashes + 1
        started = time.monotonic()
        for attempt in range(self.options.max_failed_starts):
            await asyncio.sleep(self._backoff(attempt))
            if self._closing:
                return
            try:
                self._run, self.attributes = await self._spawn()
            except Exception as exc:
                log.error("restarting the %s worker for %s failed (%d/%d): %s", self.kind,
                          self.name, attempt + 1, self.options.max_failed_starts, exc)
                continue
            self.restarts += 1
            for callback in self._updated:
                callback(self.attributes)
            self._set_state("ready")
            self._watch()
            log.info("the %s worker for %s is back (pid %d) %.1f s after it ended", self.kind,
                     self.name, self._run.process.pid, time.monotonic() - started)
            return
        self._set_state("failed", f"could not be started again after {self.last_exit}")

    # -- stopping ----------------------------------------------------------------------------

    async def close(self, timeout_s: float = 10.0) -> None:
        """End the worker: close its socket (it closes the engine and exits), kill it if it
        has not exited within ``timeout_s``."""
        self._closing = True
        run, self._run = self._run, None
        for task in list(self._tasks):
            task.cancel()
        if run is not None:
            await self._end(run, timeout_s)
        for pending in self._pending.values():
            pending.fail(EngineUnavailable("The server is shutting down.",
                                           code="shutting_down"))
        self._pending.clear()
        self._set_state("stopped")

    @staticmethod
    async def _end(run: _Process, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(Exception):
            run.transport.close()
        try:
            await asyncio.wait_for(run.process.wait(), timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                run.process.kill()
            with contextlib.suppress(Exception):
                await run.process.wait()

    def kill_now(self) -> None:
        """Synchronous last resort (the event loop is gone): kill the process."""
        if self._run is not None and self._run.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._run.process.pid, signal.SIGKILL)
