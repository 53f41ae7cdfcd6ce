"""Sharing the CPU between engines.

llama.cpp's worker threads spin while they wait for each other, so a chat decode that uses every
core slows down fourfold when an embedding or speech job takes one of them. Engines other than
chat mark their CPU-heavy sections with ``CPU_WORK.running()``; the chat scheduler checks
``CPU_WORK.active`` before each decode step and leaves a core free while other work runs.

With engines in worker processes (``labs_api.workers``) the count must cross processes: the
server creates a small shared board (``CpuWorkBoard``), one 32-bit counter per worker, and each
worker ``attach``es to its own counter; ``active`` then sums the board.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
import threading
from collections.abc import Iterator

COUNTER = struct.Struct("=i")


class CpuWork:
    """A counter of CPU-heavy jobs in progress outside the chat engine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._board: mmap.mmap | None = None
        self._all_counters = COUNTER  # the whole board's layout, once attached
        self._index = 0

    def attach(self, spec: str) -> None:
        """Share this process's count on a board: ``spec`` is ``PATH:INDEX``."""
        path, index = spec.rsplit(":", 1)
        with open(path, "r+b") as file:
            self._board = mmap.mmap(file.fileno(), 0)
        self._all_counters = struct.Struct(
            "=" + COUNTER.format.lstrip("=") * (len(self._board) // COUNTER.size))
        self._index = int(index)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._add(1)
        try:
            yield
        finally:
            self._add(-1)

    def _add(self, delta: int) -> None:
        with self._lock:
            self._running += delta
            if self._board is not None:
                COUNTER.pack_into(self._board, self._index * COUNTER.size, self._running)

    @property
    def active(self) -> int:
        if self._board is None:
            return self._running
        return sum(self._all_counters.unpack_from(self._board))  # read before every decode


CPU_WORK = CpuWork()


class CpuWorkBoard:
    """The shared counters of every worker process (a small file in /dev/shm where there is
    one). The server creates it; ``spec(i)`` is what worker ``i`` attaches to."""

    def __init__(self, workers: int = 16) -> None:
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        handle, self.path = tempfile.mkstemp(prefix="labs-cpu-work-", dir=folder)
        os.write(handle, bytes(COUNTER.size * workers))
        os.close(handle)
        self.workers = workers

    def spec(self, index: int) -> str:
        if not 0 <= index < self.workers:
            raise IndexError(f"the board has {self.workers} counters")
        return f"{self.path}:{index}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
