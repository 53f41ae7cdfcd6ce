"""The host-memory prompt cache: longest-prefix lookup, a byte budget, least recently used out,
and conversations that a longer one covers."""

from __future__ import annotations

from labs_api.engines.chat.prompt_cache import PromptCache


def test_the_longest_shared_prefix_wins():
    cache = PromptCache(budget_bytes=1000)
    cache.put([1, 2, 3, 4], b"a" * 10)
    cache.put([1, 2, 9, 9, 9], b"b" * 10)
    entry, length = cache.best_for([1, 2, 3, 7])
    assert entry.tokens == (1, 2, 3, 4) and entry.state == b"a" * 10 and length == 3
    assert cache.best_for([5, 1, 2]) is None


def test_the_budget_evicts_the_least_recently_used():
    cache = PromptCache(budget_bytes=25)
    cache.put([1], b"x" * 10)
    cache.put([2], b"y" * 10)
    cache.best_for([1])  # [1] is now the most recent
    cache.put([3], b"z" * 10)  # 30 bytes > 25: [2] goes
    assert cache.size_bytes == 20 and len(cache) == 2
    assert cache.best_for([2]) is None
    assert cache.best_for([1])[0].state == b"x" * 10


def test_a_state_larger_than_the_budget_is_not_kept():
    cache = PromptCache(budget_bytes=5)
    assert not cache.put([1, 2], b"123456")
    assert len(cache) == 0 and cache.size_bytes == 0


def test_a_longer_conversation_supersedes_its_prefix_and_covers_it():
    cache = PromptCache(budget_bytes=100)
    cache.put([1, 2], b"ab")
    cache.put([1, 2, 3, 4], b"abcd")  # the follow-up turn: the shorter entry is dropped
    assert len(cache) == 1 and cache.size_bytes == 4
    assert cache.covers([1, 2]) and cache.covers([1, 2, 3, 4]) and not cache.covers([1, 3])
    assert not cache.put([1, 2, 3], b"abc")  # already held, and more
    assert len(cache) == 1


def test_the_entry_count_is_bounded():
    cache = PromptCache(budget_bytes=10**6, max_entries=3)
    for token in range(5):
        cache.put([token], b"s")
    assert len(cache) == 3 and cache.best_for([0]) is None and cache.best_for([4]) is not None
