"""Word error rate: the word-level edit distance between a reference and a hypothesis, divided
by the number of reference words. Text is compared case-folded, without punctuation."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions + deletions + insertions (Levenshtein over words), two rows at a time."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1,  # a reference word deleted
                               current[j - 1] + 1,  # a word inserted
                               previous[j - 1] + (ref != hyp)))  # kept or substituted
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = words(reference)
    if not ref:
        return 0.0 if not words(hypothesis) else 1.0
    return edit_distance(ref, words(hypothesis)) / len(ref)
