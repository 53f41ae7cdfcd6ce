"""A count of units of work done (decode steps, embedding batches, sentences), so that a
supervisor can tell a busy engine from a stuck one. Engines call ``PROGRESS.tick()``."""

from __future__ import annotations

import itertools


class Progress:
    def __init__(self) -> None:
        self._ticks = itertools.count(1)
        self.count = 0

    def tick(self) -> None:
        # itertools.count is atomic under the GIL, so engine threads can tick without a lock.
        self.count = next(self._ticks)


PROGRESS = Progress()
