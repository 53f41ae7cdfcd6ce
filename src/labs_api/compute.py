"""Sharing the CPU between engines.

llama.cpp's worker threads spin while they wait for each other, so a chat decode that uses every
core slows down fourfold when an embedding or speech job takes one of them. Engines other than
chat mark their CPU-heavy sections with ``CPU_WORK.running()``; the chat scheduler checks
``CPU_WORK.active`` before each decode step and leaves a core free while other work runs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class CpuWork:
    """A counter of CPU-heavy jobs in progress outside the chat engine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1

    @property
    def active(self) -> int:
        return self._running


CPU_WORK = CpuWork()
