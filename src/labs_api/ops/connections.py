"""Bounding client connections: a deadline for each request head, and a cap on open ones.

uvicorn closes a keep-alive connection that idles past ``timeout_keep_alive`` after a
response, but it has no deadline for a request's head: a connection that sends nothing, or
half a request line, stays open forever, and a thousand of them exhaust the process's file
descriptors. Its ``limit_concurrency`` answers 503 only once a request head has arrived (so
it never refuses those), counts tasks too, and sends neither ``Retry-After`` nor a JSON body.

:func:`guarded_protocol` extends uvicorn's HTTP protocol class (h11 or httptools, whichever
uvicorn picked) with both bounds:

- **Head deadline.** While no request is in progress (a new connection, or between two
  requests), the client has ``header_timeout`` seconds to complete the next request head; else
  the connection is closed (with a 408 if it had started one). The clock stops once the head is
  parsed, so a request body, or a response streamed for minutes, is never cut by it.
- **Head size.** A head still incomplete after ``MAX_HEAD_BYTES`` gets a 431 and is closed
  (h11 has such a limit of its own, 16 KiB; httptools, which uvicorn prefers, has none and
  would buffer headers for as long as they come).
- **Connection cap.** A connection past ``max_connections`` open ones gets an immediate 503
  with ``Retry-After`` and OpenAI's error body, and is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from labs_api.errors import error_body

log = logging.getLogger("labs_api.connections")

#: Largest request head (request line and headers) accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024
#: After a refusal, how long the connection stays half-closed, its input read and dropped, so
#: that the client reads the answer: closing a socket with unread input sends a reset, which
#: can destroy the answer before the client has read it.
LINGER_S = 2.0


def _raw_response(status: str, message: str, code: str, extra: str = "") -> bytes:
    body = json.dumps(error_body(message, "server_error" if status.startswith("5")
                                 else "invalid_request_error", None, code)).encode()
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n")
    return head.encode("ascii") + body


def too_many_connections(limit: int) -> bytes:
    return _raw_response(
        "503 Service Unavailable",
        f"Too many open connections (at most {limit}, LABS_MAX_CONNECTIONS); retry shortly.",
        "too_many_connections", "retry-after: 1\r\n")


def head_timeout(seconds: float) -> bytes:
    return _raw_response(
        "408 Request Timeout",
        f"The request head (request line and headers) did not arrive within {seconds:g} s.",
        "request_timeout")


def head_too_large() -> bytes:
    return _raw_response(
        "431 Request Header Fields Too Large",
        f"The request head (request line and headers) is larger than {MAX_HEAD_BYTES} bytes.",
        "request_header_too_large")


class HeadDeadlineMixin:
    """Mixed in before uvicorn's protocol class; uses only its ``transport``, ``cycle``,
    ``connections`` and the asyncio.Protocol callbacks, which both implementations share."""

    header_timeout: float = 10.0
    max_connections: int = 512

    transport: asyncio.Transport
    cycle: Any
    connections: set[Any]

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._deadline: asyncio.TimerHandle | None = None
        self._head_started = False
        self._head_bytes = 0
        self._seen_cycle: Any = None
        self._lingering: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d open, at most %d", len(self.connections) - 1,
                        self.max_connections)
            self._refuse(too_many_connections(self.max_connections))
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # refused: the client's input is dropped
        if self._deadline is not None:  # waiting for a head
            self._head_started = True
            if self._head_bytes > MAX_HEAD_BYTES:  # counted before this read, which may
                self._refuse(head_too_large())     # hold the start of a body too
                return
            self._head_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        self._follow_cycle()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._follow_cycle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _follow_cycle(self) -> None:
        """A new request cycle means a complete head: stop the clock. A finished one (and no
        newer) means the connection waits for the next head: start it."""
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:
            self._seen_cycle = cycle
            self._disarm()
        if (cycle is None or cycle.response_complete) and self._deadline is None:
            self._arm()

    def _arm(self) -> None:
        if self.transport.is_closing():
            return
        self._head_started = False
        self._head_bytes = 0
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._head_started:
            self._refuse(head_timeout(self.header_timeout))
        elif not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        """Send ``response``, stop writing, drop what the client still sends, close soon."""
        self._disarm()
        if self.transport.is_closing() or self._lingering is not None:
            return
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._lingering = asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)


def guarded_protocol(header_timeout: float, max_connections: int,
                     base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (``base``, by default the one uvicorn would pick:
    httptools when installed, else h11) with the bounds."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base
    return type("GuardedHTTPProtocol", (HeadDeadlineMixin, base), {
        "header_timeout": header_timeout, "max_connections": max_connections})


def check_file_limit(max_connections: int, reserve: int = 256) -> None:
    """Warn when the process may run out of file descriptors before the connection cap."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < max_connections + reserve:
        log.warning("LABS_MAX_CONNECTIONS=%d leaves fewer than %d of the %d file descriptors "
                    "this process may open (ulimit -n) for models and files", max_connections,
                    reserve, soft)
