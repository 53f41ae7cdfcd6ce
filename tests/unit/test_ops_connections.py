"""The connection guard (labs_api.ops.connections) on both of uvicorn's HTTP implementations,
with a tiny ASGI app on a thread: head deadline, head size, connection cap, and responses
that outlast the deadline (streams, keep-alive, pipelining) left alone."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from labs_api.ops.connections import guarded_protocol
from tests.e2e.server import free_port

DEADLINE_S = 0.5


async def app(scope, receive, send) -> None:
    """``/stream`` sends a chunk every 0.1 s for 1.5 s; anything else says ok at once."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/stream":
        for _ in range(15):
            await asyncio.sleep(0.1)
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})
    else:
        await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def guarded_server(base: type, max_connections: int = 50) -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            http=guarded_protocol(DEADLINE_S, max_connections, base),
                            timeout_keep_alive=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def read_all(sock: socket.socket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.fixture(params=[H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def port(request) -> Iterator[int]:
    with guarded_server(request.param) as port:
        yield port


def test_silent_and_half_sent_heads_are_closed_at_the_deadline(port):
    silent = socket.create_connection(("127.0.0.1", port))
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    assert read_all(silent) == b""
    answer = read_all(half)
    assert time.monotonic() - started < DEADLINE_S + 1
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in answer


def test_a_response_longer_than_the_deadline_is_not_cut(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        started = time.monotonic()
        data = read_all(sock)
    assert time.monotonic() - started > 3 * DEADLINE_S
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"3\r\nend\r\n0\r\n\r\n")


def test_keep_alive_and_pipelined_requests_are_served(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(DEADLINE_S * 0.6)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        data = read_all(sock)
    assert data.count(b"HTTP/1.1 200") == 3


def test_a_head_over_64_kib_is_refused(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(b"GET / HTTP/1.1\r\n")
            for _ in range(40):
                sock.sendall(b"X-Big: " + b"a" * 8000 + b"\r\n")
        data = read_all(sock)
    # httptools has no limit of its own: the guard's 431; h11 stops at 16 KiB with a 400.
    assert data.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 "))


@pytest.mark.parametrize("base", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_past_the_cap_a_connection_gets_503_with_retry_after(base):
    with guarded_server(base, max_connections=3) as port:
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        time.sleep(0.2)
        answers = [read_all(s, timeout=0.1) if i >= 3 else b"" for i, s in enumerate(socks)]
        for sock in socks:
            sock.close()
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            after = read_all(sock)
    for answer in answers[3:]:
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1\r\n" in answer
        assert b'"too_many_connections"' in answer and b"at most 3" in answer
    assert after.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("base", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_a_refused_client_that_sends_its_request_still_reads_the_503(base):
    """The refusal half-closes and drops the client's input for a while instead of closing
    at once: a close with unread input sends a reset, which can destroy the answer in flight
    (seen as a read error in httpx under load; loopback rarely shows it)."""
    with guarded_server(base, max_connections=1) as port, \
            socket.create_connection(("127.0.0.1", port)) as held:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            # At once, as an HTTP client does: the input is there before the refusal.
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                         + b"x" * 100_000)
            time.sleep(0.3)
            answer = read_all(sock)
        held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(held).startswith(b"HTTP/1.1 200")
    assert answer.startswith(b"HTTP/1.1 503 ") and b'"too_many_connections"' in answer
