"""The server's reading end of a worker's socket: frames (``wire``: a 4-byte length, then a
pickle) handed to a callback as the bytes arrive.

A protocol instead of a StreamReader and a reading task: a streamed token is one frame, and
on a machine whose cores are all decoding, each Python step between the socket and the
client's response is taken from the decode. Here a frame costs one ``data_received`` call and
one ``pickle.loads``; no task wakes up to read it.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from typing import Any

from labs_api.workers.wire import HEADER, check_size


class FrameProtocol(asyncio.Protocol):
    """Calls ``handler(message)`` for each whole frame, in order, and ``handler(None)`` once
    when the socket has ended (or a frame was unreadable: the socket is then closed, so the
    worker sees its end too). ``handler`` may be replaced at any time."""

    def __init__(self, handler: Callable[[Any], None]) -> None:
        self.handler = handler
        self.transport: asyncio.BaseTransport | None = None  # uvloop's is no asyncio.Transport
        self._buffer = bytearray()
        self._needed = HEADER.size  # bytes the buffered frame needs before it is whole
        self._ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._buffer:  # the rest of a frame that came in pieces (a large result)
            self._buffer += data
            if len(self._buffer) < self._needed:
                return
            data = bytes(self._buffer)
            self._buffer.clear()
        try:
            self._frames(data)
        except Exception:  # an oversized or unreadable frame: this socket is done
            self._buffer.clear()
            if self.transport is not None:
                self.transport.close()
            self._end()

    def _frames(self, data: bytes) -> None:
        view = memoryview(data)
        pos, size_all = 0, len(data)
        while size_all - pos >= HEADER.size:
            (size,) = HEADER.unpack_from(data, pos)
            check_size(size)
            end = pos + HEADER.size + size
            if end > size_all:
                break
            message = pickle.loads(view[pos + HEADER.size:end])
            pos = end
            if not self._ended:
                self.handler(message)
        if pos < size_all:
            self._buffer += view[pos:]
            self._needed = (HEADER.size + HEADER.unpack_from(data, pos)[0]
                            if size_all - pos >= HEADER.size else HEADER.size)

    def eof_received(self) -> bool:
        self._end()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.handler(None)
