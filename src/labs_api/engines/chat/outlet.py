"""A way for a request's generated chunks to leave the engine's thread without waking the
consumer's event loop.

Normally the decode thread hands each step's chunks to the loop that is iterating the request
(``call_soon_threadsafe``), and the loop passes them on. In an engine worker that loop only
forwards them to the server's socket, so each streamed token cost a wake-up of the worker's
loop, CPU taken from a decode that keeps every core busy. A consumer that can take chunks on
the engine's thread (the worker writes them to its socket itself) sets :data:`CHUNK_OUTLET`
in its context before it starts a stream; the engine hands the plain chunks of each step to
the outlet, and only the last chunk of each generation (and any error) still goes through the
loop, after the chunks before it, so the consumer's iterator still sees every generation end.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Protocol

from labs_api.engines.chat.base import GenerationChunk


class Outlet(Protocol):
    def send_from_thread(self, items: list[tuple[Any, Any]]) -> bool:
        """Send ``(key, item)`` pairs now, in order, from the engine's thread. False (and
        nothing sent) when it cannot at the moment: the caller uses the loop instead."""


@dataclass(frozen=True)
class ChunkOutlet:
    """Where one stream's ``(index, chunk)`` events may go from the engine's thread, and the
    key its consumer knows them by."""

    outlet: Outlet
    key: Any


#: Set by the consumer of a stream (in the task that starts it); read by the engine when the
#: stream is submitted.
CHUNK_OUTLET: contextvars.ContextVar[ChunkOutlet | None] = contextvars.ContextVar(
    "labs_api_chunk_outlet", default=None)


def wire_event(item: tuple[int, Any]) -> tuple[str, Any]:
    """How an outlet's ``(index, chunk)`` crosses a worker's socket. A chunk of text alone
    (one per streamed token) goes as ``("text", (index, text))``: a tuple of plain values
    pickles and unpickles several times faster than a dataclass, and both happen per token on
    machines whose cores are all decoding. Anything else goes whole, as ``("item", item)``."""
    index, chunk = item
    if (type(chunk) is GenerationChunk and chunk.finish_reason is None
            and chunk.logprobs is None and not chunk.prompt_tokens
            and not chunk.completion_tokens and not chunk.cached_tokens):
        return "text", (index, chunk.text)
    return "item", item


def from_text_event(payload: tuple[int, str]) -> tuple[int, GenerationChunk]:
    """The ``(index, chunk)`` a ``("text", ...)`` event stands for."""
    index, text = payload
    return index, GenerationChunk(text=text)
