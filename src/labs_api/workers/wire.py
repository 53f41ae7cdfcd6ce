"""Frames on the socket between the server and an engine worker: a 4-byte length, then a
pickle. Both ends are this program, started by the server itself, so pickle is safe here
(nothing a client sends is unpickled: clients' data is already parsed into plain values)."""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

HEADER = struct.Struct("!I")
#: Largest frame either side accepts (a 2048-input embedding result is about 3 MB).
MAX_FRAME_BYTES = 1 << 30


def check_size(size: int) -> None:
    """Refuse a frame header announcing more than either side accepts."""
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"a {size}-byte frame is over the {MAX_FRAME_BYTES} limit")


def encode(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME_BYTES:
        raise ValueError(f"a {len(data)}-byte message is over the {MAX_FRAME_BYTES} limit")
    return HEADER.pack(len(data)) + data


async def read(reader: asyncio.StreamReader) -> Any:
    """The next message, or None when the other side has gone (end of stream)."""
    try:
        header = await reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(header)
        check_size(size)
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
