"""The engine worker process: loads one engine, then serves its proxy's calls until the server
goes away. Started by the supervisor as ``python -m labs_api.workers.child FD``, where FD is its
end of a socket pair.

Messages in: ``("init", {...})`` once, then ``("call"|"stream", id, method, args)`` and
``("cancel", id)``. Messages out are lists of events ``(id, what, payload)``: everything produced
in one turn of the event loop goes out as one frame, so one decode step of the chat scheduler
(a token for each of its slots) costs one message, not one per token per request. Id 0 carries
the worker's own events: ``ready``, ``failed`` and a ``beat`` every second with the engine's
progress count and queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import logging
import os
import select
import signal
import socket
import sys
import threading
from typing import Any

from labs_api.compute import CPU_WORK
from labs_api.engines.chat.outlet import CHUNK_OUTLET, ChunkOutlet, wire_event
from labs_api.engines.error_report import ErrorReport
from labs_api.engines.progress import PROGRESS
from labs_api.engines.remote import EngineHost, public_attributes
from labs_api.workers import wire

log = logging.getLogger("labs_api.worker")

#: What a proxy may call on the host; anything else is refused.
METHODS = frozenset({"tokenize", "detokenize", "pieces", "stream", "embed", "transcribe",
                     "rerank"})
BEAT_SECONDS = 1.0


class Outbox:
    """Events waiting to be sent; the first one of a loop turn schedules the flush. An engine
    thread may also write its chunks itself (``send_from_thread``); one lock keeps the two
    writers' frames whole and in order."""

    def __init__(self, writer: asyncio.StreamWriter, sock: socket.socket) -> None:
        self.writer = writer
        self.sock = sock
        self.lock = threading.Lock()
        self.pending: list[tuple[int, str, Any]] = []
        self.frames = 0
        self.events = 0
        self.thread_events = 0  # of those, sent by an engine thread

    def put(self, event: tuple[int, str, Any]) -> None:
        self.pending.append(event)
        if len(self.pending) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            data = wire.encode(batch)
        except Exception:  # one event would not pickle: send the others, and its error
            data = b"".join(self._encode_alone(event) for event in batch)
        with self.lock:
            self.writer.write(data)
            self._count(sum(1 for event in batch if event[0] != 0))  # not the beats

    def send_from_thread(self, items: list[tuple[Any, Any]]) -> bool:
        """Stream items ``(id, item)`` from an engine's thread, written at once (see
        ``labs_api.engines.chat.outlet``): a token costs this loop no wake-up. Only while
        nothing the loop wrote is still waiting to go out, so no frame overtakes another."""
        try:
            data = wire.encode([(rid, *wire_event(item)) for rid, item in items])
        except Exception:
            return False  # the loop's path reports what would not pickle
        with self.lock:
            transport = self.writer.transport
            if transport.is_closing() or transport.get_write_buffer_size():
                return False
            try:
                _send_all(self.sock, data)
            except OSError:
                return False  # the server has gone; the loop sees it too
            self._count(len(items))
            self.thread_events += len(items)
        return True

    def _count(self, events: int) -> None:
        self.frames += 1 if events else 0
        self.events += events

    @staticmethod
    def _encode_alone(event: tuple[int, str, Any]) -> bytes:
        try:
            return wire.encode([event])
        except Exception as exc:
            rid = event[0]
            return wire.encode([(rid, "error", ErrorReport.of(
                TypeError(f"the engine's {event[1]} could not be sent: {exc}")))])


def _send_all(sock: socket.socket, data: bytes) -> None:
    """All of ``data`` on the loop's non-blocking socket, waiting while the server's side is
    full (it reads all the time; a frame must never be left half written)."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return  # nearly always: a token's frame is a few dozen bytes
    view = memoryview(data)[sent:]
    poller = None
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
            poller.poll(1000)


class WorkerServer:
    """Runs each call and stream of the proxy as a task of its own."""

    def __init__(self, host: EngineHost, outbox: Outbox) -> None:
        self.host = host
        self.outbox = outbox
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def handle(self, message: tuple[Any, ...]) -> None:
        what = message[0]
        if what == "cancel":
            task = self.tasks.get(message[1])
            if task is not None:
                task.cancel()
            return
        _, rid, method, args = message
        run = self._call if what == "call" else self._stream
        self.tasks[rid] = asyncio.create_task(run(rid, method, args))

    def _method(self, method: str) -> Any:
        if method not in METHODS:
            raise AttributeError(f"an engine worker has no method {method!r}")
        return getattr(self.host, method)

    async def _call(self, rid: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            result = self._method(method)(*args)
            if inspect.isawaitable(result):
                result = await result
            self.outbox.put((rid, "result", result))
        except asyncio.CancelledError:
            pass  # the server gave up on it: nobody to answer
        except Exception as exc:
            self.outbox.put((rid, "error", ErrorReport.of(exc)))
        finally:
            self.tasks.pop(rid, None)

    async def _stream(self, rid: int, method: str, args: tuple[Any, ...]) -> None:
        items = None
        CHUNK_OUTLET.set(ChunkOutlet(self.outbox, rid))  # this task's context only
        try:
            items = self._method(method)(*args)
            async for item in items:
                self.outbox.put((rid, "item", item))
            self.outbox.put((rid, "end", None))
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.outbox.put((rid, "error", ErrorReport.of(exc)))
        finally:
            self.tasks.pop(rid, None)
            if items is not None:
                with contextlib.suppress(Exception):
                    await items.aclose()  # stops the engine's work for this stream

    def cancel_all(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()


async def beat(outbox: Outbox, host: list[EngineHost]) -> None:
    """Tell the supervisor, every second, how far the engine has got. If this stops (the loop
    is blocked, the process hangs), the supervisor sees silence."""
    while True:
        stats = host[0].queue_stats() if host else None
        outbox.put((0, "beat", {"progress": PROGRESS.count + outbox.events, "queue": stats,
                                "frames": outbox.frames, "events": outbox.events,
                                "thread_events": outbox.thread_events}))
        await asyncio.sleep(BEAT_SECONDS)


async def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=wire.MAX_FRAME_BYTES)
    outbox = Outbox(writer, sock)
    init = await wire.read(reader)
    if init is None:
        return
    options: dict[str, Any] = init[1]
    configure_logging(options["log_level"], options["name"])
    if options.get("cpu_work"):
        CPU_WORK.attach(options["cpu_work"])
    hosts: list[EngineHost] = []
    beating = asyncio.create_task(beat(outbox, hosts))
    try:
        engine = await asyncio.to_thread(options["load"])
    except Exception as exc:
        log.error("loading failed: %s: %s", type(exc).__name__, exc)
        outbox.put((0, "failed", ErrorReport.of(exc)))
        outbox.flush()
        await writer.drain()
        return
    hosts.append(EngineHost(options["kind"], engine))
    outbox.put((0, "ready", public_attributes(engine)))
    server = WorkerServer(hosts[0], outbox)
    try:
        while (message := await wire.read(reader)) is not None:
            server.handle(message)
    finally:
        beating.cancel()
        server.cancel_all()
        with contextlib.suppress(Exception):
            engine.close()


def configure_logging(level: str, name: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s [{name} worker "
                        f"{os.getpid()}]: %(message)s")


def die_with_parent() -> None:
    """Linux: be killed when the server process dies, however it dies (even kill -9)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def run_loop(main_coroutine: Any) -> None:
    """uvloop where it is installed (it comes with uvicorn[standard]; not on Windows): each
    streamed token crosses this loop, and uvloop's thread wake-ups and socket writes cost
    less CPU than asyncio's, CPU the decode threads would otherwise lose."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)


def main(argv: list[str]) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which stops us
    run_loop(serve(int(argv[1])))
    sys.stderr.flush()
    os._exit(0)  # engine libraries may leave non-daemon threads behind


if __name__ == "__main__":
    main(sys.argv)
