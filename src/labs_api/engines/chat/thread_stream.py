"""Run a blocking generator on a worker thread and consume it as an async iterator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def stream_from_thread(
    executor: Executor, produce: Callable[[threading.Event], Iterator[T]]
) -> AsyncIterator[T]:
    """Yield what ``produce`` yields, while it runs on ``executor``.

    ``produce`` receives an event that is set when the consumer goes away (the client
    disconnected or the iterator was closed); it must check it between items and return.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
    cancelled = threading.Event()

    def deliver(item: object, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the event loop is gone: nobody is listening
            cancelled.set()

    def run() -> None:
        try:
            if cancelled.is_set():
                deliver(_END)
                return
            for item in produce(cancelled):
                deliver(item)
                if cancelled.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, which re-raises it
            deliver(_END, exc)
        else:
            deliver(_END)

    executor.submit(run)
    try:
        while True:
            item, error = await queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        cancelled.set()
