"""Conversations' KV state kept in host memory after their slot moves on (as llama-server's
``--cache-ram``): a later request that starts with one of them gets it back by a copy instead of
evaluating its prompt again.

Only the scheduler thread uses it. Bounded by bytes and by entries, least recently used first
out; an entry whose tokens are a prefix of a newer one's is dropped (the newer one serves both).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class SavedConversation:
    tokens: tuple[int, ...]  # what the saved KV cells hold, in order
    state: bytes  # llama_state_seq_get_data of that sequence


class PromptCache:
    def __init__(self, budget_bytes: int, max_entries: int = 256) -> None:
        self.budget_bytes = budget_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, ...], SavedConversation] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tokens: list[int] | tuple[int, ...], state: bytes) -> bool:
        """Keep ``state`` for ``tokens``; False when it is larger than the whole budget or an
        entry already holds these tokens and more."""
        key = tuple(tokens)
        if not key or len(state) > self.budget_bytes:
            return False
        for held in list(self._entries):
            if held[:len(key)] == key and len(held) >= len(key):
                self._entries.move_to_end(held)
                return False  # already covered
            if key[:len(held)] == held:
                self._drop(held)  # superseded by the longer conversation
        self._entries[key] = SavedConversation(key, state)
        self.size_bytes += len(state)
        while self.size_bytes > self.budget_bytes or len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))
        return True

    def covers(self, tokens: list[int] | tuple[int, ...]) -> bool:
        """Whether an entry holds ``tokens`` (and perhaps more): saving them would add nothing."""
        key = tuple(tokens)
        return any(held[:len(key)] == key for held in self._entries if len(held) >= len(key))

    def best_for(self, prompt: list[int]) -> tuple[SavedConversation, int] | None:
        """The saved conversation sharing the longest prefix with ``prompt``, and its length
        (None when none shares a token); it becomes the most recently used."""
        best, best_length = None, 0
        for entry in self._entries.values():
            length = common_prefix(entry.tokens, prompt)
            if length > best_length:
                best, best_length = entry, length
        if best is None:
            return None
        self._entries.move_to_end(best.tokens)
        return best, best_length

    def _drop(self, key: tuple[int, ...]) -> None:
        self.size_bytes -= len(self._entries.pop(key).state)


def common_prefix(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
