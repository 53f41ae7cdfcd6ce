"""Splitting text into sentences: the unit a speech engine synthesises and the server streams."""

from __future__ import annotations

import re

# Abbreviations whose full stop does not end a sentence (compared lower-case, without the dot).
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "cf",
    "fig", "figs", "approx", "dept", "inc", "ltd", "corp", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})

# A sentence ends after . ! ? or … (and any closing quotes or brackets) followed by whitespace,
# after CJK full stops with or without a space, and at line breaks.
_END = re.compile(r"""([.!?\u2026]+["'\u201d\u2019)\]]*)(?=\s)|([\u3002\uff01\uff1f])|\n+""")
_CLAUSE = re.compile(r"[,;:\u2014\u2013]\s")
_SPEAKABLE = re.compile(r"\w")


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """The sentences of ``text``, in order, each at most ``max_chars`` characters.

    A sentence longer than ``max_chars`` is cut at clause punctuation, else between words, else
    (a single huge "word") anywhere. Pieces with nothing to say (only punctuation or spaces)
    are dropped.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    sentences: list[str] = []
    for sentence in _sentences(text):
        sentences.extend(_fit(sentence, max_chars))
    return [s for s in sentences if _SPEAKABLE.search(s)]


def _sentences(text: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _END.finditer(text):
        end = match.end()
        if match.group(1) and _is_abbreviation(text[start:match.start()], match.group(1)):
            continue
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return [" ".join(p.split()) for p in pieces if p.strip()]


def _is_abbreviation(before: str, ending: str) -> bool:
    """A single full stop after a known abbreviation or a lone initial ("J. Smith")."""
    if ending != ".":
        return False
    words = before.split()
    if not words:
        return False
    last = words[-1].lstrip("(\"'\u201c\u2018").lower()
    return last in ABBREVIATIONS or (len(last) == 1 and last.isalpha())


def _fit(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    cut = _cut_point(sentence, max_chars)
    head, tail = sentence[:cut].strip(), sentence[cut:].strip()
    return ([head] if head else []) + (_fit(tail, max_chars) if tail else [])


def _cut_point(sentence: str, max_chars: int) -> int:
    window = sentence[: max_chars + 1]
    clauses = [m.end() for m in _CLAUSE.finditer(window) if m.end() <= max_chars]
    if clauses and clauses[-1] > max_chars // 3:
        return clauses[-1]
    space = window.rfind(" ")
    if space > 0:
        return space
    return max_chars
