"""Splitting text into the sentences that are synthesised and streamed one by one."""

from __future__ import annotations

import pytest

from labs_api.engines.speech.sentences import split_sentences


def test_splits_at_sentence_ends_and_keeps_the_punctuation():
    assert split_sentences("Hello world. How are you? Fine!  Thanks…") == [
        "Hello world.", "How are you?", "Fine!", "Thanks…"]


def test_abbreviations_initials_and_decimals_do_not_end_a_sentence():
    text = "Mr. Smith met Dr. Jones at 3.30 today. J. R. R. Tolkien wrote e.g. this."
    assert split_sentences(text) == ["Mr. Smith met Dr. Jones at 3.30 today.",
                                     "J. R. R. Tolkien wrote e.g. this."]


def test_closing_quotes_stay_with_their_sentence():
    assert split_sentences('He said "stop." Then he left.') == ['He said "stop."',
                                                                "Then he left."]


def test_line_breaks_end_sentences_and_whitespace_is_collapsed():
    assert split_sentences("A heading\n\nSome   text\tthat goes on\nand on.") == [
        "A heading", "Some text that goes on", "and on."]


def test_cjk_full_stops_split_without_spaces():
    assert split_sentences("你好。世界！再见？") == ["你好。", "世界！", "再见？"]


def test_pieces_without_anything_to_say_are_dropped():
    assert split_sentences("... !!! Hello. ??? -") == ["Hello."]
    assert split_sentences("   ") == []


@pytest.mark.parametrize("max_chars", [20, 50, 300])
def test_long_sentences_are_cut_to_the_limit_without_losing_words(max_chars):
    text = ("This sentence, which rambles on; and on: without ever stopping, has many clauses "
            "and even more words than anybody would like to hear in one breath ") * 5
    pieces = split_sentences(text, max_chars)
    assert all(len(p) <= max_chars for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_long_sentences_prefer_clause_boundaries():
    text = "First part of it, second part of it, third part of it, fourth part of it."
    assert split_sentences(text, 40) == ["First part of it, second part of it,",
                                         "third part of it, fourth part of it."]


def test_a_single_huge_word_is_cut_anywhere():
    assert split_sentences("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        split_sentences("Hi.", 0)
