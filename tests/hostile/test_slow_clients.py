"""Connection bounds on the real server, with raw sockets: a head deadline for clients that
never finish (or never start) a request, the keep-alive timeout, the connection cap with its
503, and long streams that none of this may cut."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from tests.hostile.conftest import HEADER_TIMEOUT_S, KEEP_ALIVE_TIMEOUT_S, MAX_CONNECTIONS
from tests.hostile.health import watching_health

pytestmark = pytest.mark.slow


def address(base_url: str) -> tuple[str, int]:
    parsed = urlparse(base_url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


@contextlib.contextmanager
def sockets(base_url: str, count: int) -> Iterator[list[socket.socket]]:
    opened = []
    try:
        for _ in range(count):
            opened.append(socket.create_connection(address(base_url), timeout=10))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it
    (seconds from now); raises if it is still open after ``deadline_s``."""
    started = time.monotonic()
    data = b""
    sock.settimeout(deadline_s)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def http_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def request_bytes(base_url: str, path: str, body: bytes, content_type: str) -> bytes:
    host, port = address(base_url)
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def test_invalid_utf8_over_a_raw_socket_is_a_400(hostile_url, chat_model):
    body = b'{"model": "' + chat_model.encode() + b'", "prompt": "caf\xe9 \xc3\x28"}'
    for content_type, status, words in [("application/json", 400, "not valid UTF-8"),
                                        ("text/plain; charset=latin-1", 415, "text/plain")]:
        with sockets(hostile_url, 1) as (sock,):
            sock.sendall(request_bytes(hostile_url, "/v1/completions", body, content_type))
            data, _ = read_until_closed(sock, 10)
        code, headers, payload = http_response(data)
        assert code == status, data[:300]
        error = json.loads(payload)["error"]
        assert words in error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(f"{hostile_url}/health").json() == {"status": "ok"}


def test_clients_that_never_finish_their_head_are_disconnected(hostile_url):
    """30 connections stop halfway through their headers, 10 send nothing: all are closed
    within the head deadline (the half-sent ones with a 408), while /health keeps answering."""
    with watching_health(hostile_url) as health, sockets(hostile_url, 40) as opened:
        for sock in opened[:30]:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
        results = [read_until_closed(sock, HEADER_TIMEOUT_S + 5) for sock in opened]
    print(f"\nslow clients: closed after {min(t for _, t in results):.2f}-"
          f"{max(t for _, t in results):.2f} s; {health.summary()}")
    for data, seconds in results[:30]:
        code, headers, payload = http_response(data)
        assert code == 408 and headers["connection"] == "close"
        assert json.loads(payload)["error"]["code"] == "request_timeout"
        assert seconds < HEADER_TIMEOUT_S + 2
    for data, seconds in results[30:]:
        assert data == b"" and seconds < HEADER_TIMEOUT_S + 2
    # Looser than the 50 ms of the body limits: accepting and closing 40 connections is real
    # work for the loop (measured p99 10-53 ms on a loaded 2-core machine).
    assert health.failures == [] and health.percentile(99) < 100


def test_a_trickling_head_is_cut_at_the_deadline_however_busy_it_looks(hostile_url):
    with sockets(hostile_url, 1) as (sock,):
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        with contextlib.suppress(OSError):
            for _ in range(int(HEADER_TIMEOUT_S * 4) + 8):
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.25)
        data, _ = read_until_closed(sock, 5)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 5
    assert http_response(data)[0] == 408


def test_an_idle_keep_alive_connection_is_closed(hostile_url):
    host, port = address(hostile_url)
    with sockets(hostile_url, 1) as (sock,):
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        data, seconds = read_until_closed(sock, KEEP_ALIVE_TIMEOUT_S + 5)
    assert data == b"" and seconds < KEEP_ALIVE_TIMEOUT_S + 1.5


def test_past_the_connection_cap_a_client_gets_503_with_retry_after(hostile_url, chat_model):
    extra = 20
    with sockets(hostile_url, MAX_CONNECTIONS + extra) as opened:
        # A refused connection has its answer at once; an accepted one waits for a head.
        time.sleep(0.5)
        readable, _, _ = select.select(opened, [], [], 0)
        refused = [read_until_closed(sock, 5)[0] for sock in readable]
        assert len(opened) - len(refused) <= MAX_CONNECTIONS
        assert len(refused) >= extra
        for data in refused:
            code, headers, payload = http_response(data)
            assert code == 503 and headers["retry-after"] == "1"
            error = json.loads(payload)["error"]
            assert error["code"] == "too_many_connections"
            assert f"at most {MAX_CONNECTIONS}" in error["message"]
    deadline = time.monotonic() + 10  # until the server has seen the closes
    while (health := httpx.get(f"{hostile_url}/health")).status_code == 503:
        assert health.json()["error"]["code"] == "too_many_connections"  # read, not reset
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert health.json() == {"status": "ok"}
    response = httpx.post(f"{hostile_url}/v1/chat/completions", timeout=60, json={
        "model": chat_model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]


def test_a_stream_longer_than_every_timeout_is_not_cut(hostile_url, chat_model):
    """A chat stream of 600 tokens (end-of-text tokens banned) lasts several head deadlines
    and keep-alive timeouts, and arrives whole."""
    started = time.monotonic()
    pieces, finish = [], None
    with httpx.stream("POST", f"{hostile_url}/v1/chat/completions", timeout=300, json={
            "model": chat_model, "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 600, "stream": True, "logit_bias": {"0": -100, "1": -100, "2": -100},
            "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    seconds = time.monotonic() - started
    assert lines[-1] == "data: [DONE]"
    usage = None
    for line in lines[:-1]:
        chunk = json.loads(line[6:])
        assert "error" not in chunk, chunk
        for choice in chunk["choices"]:
            pieces.append(choice["delta"].get("content", ""))
            finish = choice["finish_reason"] or finish
        usage = chunk.get("usage") or usage
    print(f"\nstream: {usage['completion_tokens']} tokens in {seconds:.1f} s")
    assert finish == "length" and usage["completion_tokens"] == 600
    assert len("".join(pieces)) > 600
    assert seconds > HEADER_TIMEOUT_S + KEEP_ALIVE_TIMEOUT_S


def test_a_head_larger_than_64_kib_is_a_431(hostile_url):
    with sockets(hostile_url, 1) as (sock,):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):
            for _ in range(40):  # 320 KiB of headers, never finished
                sock.sendall(b"X-Big: " + b"a" * 8192 + b"\r\n")
        data, _ = read_until_closed(sock, 10)
    code, headers, payload = http_response(data)
    assert code == 431 and headers["connection"] == "close"
    assert "65536 bytes" in json.loads(payload)["error"]["message"]
    with sockets(hostile_url, 1) as (sock,):  # a 60 KiB head is still fine
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000
                     + b"\r\nConnection: close\r\n\r\n")
        data, _ = read_until_closed(sock, 10)
    assert http_response(data)[0] == 200 and data.endswith(b'{"status":"ok"}')
