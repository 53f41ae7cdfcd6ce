"""The server's frame reader (workers/frames.py) and SSE encoding: whole frames in order
however the bytes arrive, one end signal, and a bad frame closes the socket."""

from __future__ import annotations

import json
import struct

from labs_api.api.sse import sse_event, typed_sse_event
from labs_api.workers import wire
from labs_api.workers.frames import FrameProtocol


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def reader() -> tuple[FrameProtocol, list, FakeTransport]:
    got: list = []
    protocol = FrameProtocol(got.append)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, got, transport


def test_frames_split_and_joined_any_way_arrive_whole_and_in_order() -> None:
    messages = [[(1, "item", "a")], [(1, "item", "é" * 70_000)], [(0, "beat", {"q": 1})],
                [(1, "end", None)]]
    data = b"".join(wire.encode(m) for m in messages)
    for piece in (1, 3, 4, 5, 4096, len(data)):
        protocol, got, _ = reader()
        for start in range(0, len(data), piece):
            protocol.data_received(data[start:start + piece])
        assert got == messages, piece


def test_one_whole_frame_per_read_arrives_as_it_is() -> None:
    """The common case: a streamed token per read."""
    messages = [[(1, "text", (0, " a"))], [(1, "text", (0, "é" * 300))], [(1, "end", None)]]
    protocol, got, transport = reader()
    for message in messages:
        protocol.data_received(wire.encode(message))
    assert got == messages
    assert not transport.closed


def test_an_unreadable_frame_alone_ends_the_stream() -> None:
    protocol, got, transport = reader()
    protocol.data_received(struct.pack("!I", 3) + b"\x00\x01\x02")
    protocol.data_received(wire.encode(["late"]))
    assert got == [None]
    assert transport.closed


def test_the_end_is_signalled_once_and_nothing_after_it() -> None:
    protocol, got, _ = reader()
    protocol.data_received(wire.encode(["x"]))
    protocol.eof_received()
    protocol.connection_lost(None)
    protocol.data_received(wire.encode(["late"]))
    assert got == [["x"], None]


def test_an_oversized_frame_closes_the_socket_and_ends_the_stream() -> None:
    protocol, got, transport = reader()
    protocol.data_received(struct.pack("!I", wire.MAX_FRAME_BYTES + 1) + b"xx")
    assert transport.closed
    assert got == [None]


def test_an_unreadable_frame_ends_the_stream_after_the_good_ones() -> None:
    protocol, got, transport = reader()
    protocol.data_received(wire.encode(["good"]) + struct.pack("!I", 3) + b"\x00\x01\x02")
    assert got == [["good"], None]
    assert transport.closed


def test_sse_events_are_compact_utf8_json_lines() -> None:
    payload = {"choices": [{"delta": {"content": "héllo \"x\"\n"}, "n": 1.5, "k": None}]}
    # Exactly what json wrote before: compact separators, UTF-8 (no \\u escapes).
    expected = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert sse_event(payload) == b"data: " + expected + b"\n\n"
    typed = typed_sse_event({"type": "response.created", "x": 1})
    assert typed == b'event: response.created\ndata: {"type":"response.created","x":1}\n\n'
