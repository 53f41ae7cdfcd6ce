"""The rerank engine's interface and the values that cross it. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from labs_api.compute import CPU_WORK
from labs_api.engines.errors import EngineBusy
from labs_api.engines.progress import PROGRESS


@dataclass(frozen=True)
class RerankScores:
    """One score per document, in input order, and the tokens the model read."""

    scores: list[float]
    tokens: int


class RerankEngine(ABC):
    """Scores (query, document) pairs, one request at a time on a thread of its own; at most
    ``max_waiting`` requests wait, one more is refused (503) at once."""

    model_id: str
    max_input_tokens: int  # a pair longer than this is cut (the document's end)
    max_waiting: int = 16

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerank")
        self._admitted = 0

    @abstractmethod
    def score(self, query: str, documents: Sequence[str], raw: bool) -> RerankScores:
        """Blocking. ``raw``: the model's logits; else its activation (a sigmoid: 0..1)."""

    async def rerank(self, query: str, documents: Sequence[str], raw: bool = False,
                     ) -> RerankScores:
        if self._admitted > self.max_waiting:
            raise EngineBusy(f"Reranking is busy: {self._admitted} requests are in progress "
                             f"or waiting (at most {self.max_waiting + 1}). Retry shortly.",
                             retry_after=2, code="server_overloaded")
        self._admitted += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._score_marked, query,
                                              list(documents), raw)
        finally:
            self._admitted -= 1

    def _score_marked(self, query: str, documents: list[str], raw: bool) -> RerankScores:
        with CPU_WORK.running():  # the chat scheduler leaves this work a core
            result = self.score(query, documents, raw)
        PROGRESS.tick()
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False, cancel_futures=True)
