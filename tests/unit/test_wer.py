"""The word error rate used by the voice-loop test and benchmark."""

from __future__ import annotations

import pytest

from tests.wer import edit_distance, word_error_rate, words


def test_words_ignore_case_and_punctuation_but_keep_apostrophes():
    assert words("Hello, World! It's 3 o'clock.") == ["hello", "world", "it's", "3", "o'clock"]


@pytest.mark.parametrize(("ref", "hyp", "distance"), [
    ("a b c", "a b c", 0),
    ("a b c", "a x c", 1),  # substitution
    ("a b c", "a c", 1),  # deletion
    ("a b c", "a b b c", 1),  # insertion
    ("a b c d", "b c d e", 2),  # a word lost at the start, one added at the end
    ("", "a b", 2),
])
def test_edit_distance_counts_each_kind_of_error(ref, hyp, distance):
    assert edit_distance(ref.split(), hyp.split()) == distance


def test_word_error_rate_divides_by_the_reference_length():
    assert word_error_rate("The quick brown fox.", "the quick brown fox") == 0.0
    assert word_error_rate("The quick brown fox.", "the quick fox") == 0.25
    assert word_error_rate("one two", "one two three four") == 1.0  # can pass 1 with insertions
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "noise") == 1.0
