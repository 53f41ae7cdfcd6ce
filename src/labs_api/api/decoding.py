"""Strict decoding of request bodies: the one path every JSON body takes before validation.

Left to itself, FastAPI hands the body to ``json.loads``, which accepts ``NaN``, ``Infinity``
and numbers that overflow to infinity (``1e999``), and yields strings holding lone UTF-16
surrogates (``"\\ud800"``). Each of these passes validation and fails later, when something
encodes it (a tokenizer, Piper, or the error response that quotes it): a 500. Here a body must
be UTF-8 JSON whose numbers are finite (integers within 64 bits) and whose strings, keys
included, are valid Unicode without NUL. Anything else is a 400 (not JSON at all) or a 422 that
names the field, before any model is validated.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError

from labs_api.api.limits import LimitExceededError
from labs_api.errors import APIError, BadRequestError

INT_LIMIT = 2**63  # integers must fit a signed 64-bit value, as OpenAI's int64 fields
#: Raw escapes that may decode to a surrogate or a NUL: without them, no string needs a look.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Every digit as "0": a run of 19 zeros then marks an integer that may be out of range
#: (a regular expression takes 30 times longer on a large body).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_INT64_DIGITS = b"0" * 19
#: JSON objects in one body. No valid request comes near (4096 messages with a few parts and
#: tool calls each, 512 schema properties); past it the parse stops at once.
MAX_JSON_OBJECTS = 65_536
JSON_TYPES = ("application/json",)


class UnsupportedMediaTypeError(APIError):
    status_code = 415
    error_type = "invalid_request_error"
    code = "unsupported_media_type"


@dataclass(frozen=True)
class _Rejected:
    """Put in place of a number that cannot be accepted, so the walk can name its field."""

    reason: str


_NON_FINITE = _Rejected("must be a finite number (NaN, Infinity and numbers beyond "
                        "±1.8e308 are not accepted)")
_INT_RANGE = _Rejected("must be an integer within the signed 64-bit range")


class _Scan:
    """The parse hooks of one body; ``rejected`` is set when a number was replaced."""

    def __init__(self) -> None:
        self.rejected = False
        self.objects = 0

    def object_(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.objects += 1
        if self.objects > MAX_JSON_OBJECTS:
            raise LimitExceededError(f"The body holds more than {MAX_JSON_OBJECTS} JSON "
                                     "objects; no request needs as many.")
        return dict(pairs)

    def constant(self, _: str) -> _Rejected:  # NaN, Infinity, -Infinity
        self.rejected = True
        return _NON_FINITE

    def float_(self, text: str) -> float | _Rejected:
        value = float(text)
        if math.isfinite(value):
            return value
        self.rejected = True
        return _NON_FINITE

    def int_(self, text: str) -> int | _Rejected:
        # Longer than any int64 (sign included): never converted (Python refuses > 4300 digits).
        value = int(text) if len(text) <= 20 else INT_LIMIT
        if -INT_LIMIT <= value < INT_LIMIT:
            return value
        self.rejected = True
        return _INT_RANGE


def may_overflow(body: bytes) -> bool:
    """Whether ``body`` holds a run of digits as long as the largest int64 (in a number or
    not: then every integer is checked)."""
    return _INT64_DIGITS in body.translate(_DIGITS_AS_ZERO)


def is_json_content_type(value: str | None) -> bool:
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def decode_body(body: bytes, content_type: str | None, *, yielding: bool = False) -> Any:
    """The JSON value of ``body``; raises a 415, 400 or 422 ``APIError`` /
    ``RequestValidationError`` for anything that is not strict UTF-8 JSON.

    ``yielding``: the body is large and decoded on a worker thread; let other threads run
    between its steps."""
    if not is_json_content_type(content_type):
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, not {_printable(content_type or 'none')}.")
    try:
        text = _utf8(body, yielding)
    except UnicodeDecodeError as exc:
        raise BadRequestError(
            f"The body is not valid UTF-8 (byte {exc.start}): send JSON encoded as UTF-8.",
            code="invalid_encoding") from None
    scan = _Scan()
    # Hooks are Python calls, so only where needed: every object of a large body (it also lets
    # other threads take the GIL, which json's C parser never gives up: 200,000 objects would
    # stall the event loop for 0.2 s), every integer when one may be out of range.
    count_objects = yielding or body.count(b"{") > MAX_JSON_OBJECTS
    try:
        value = json.loads(text, parse_constant=scan.constant, parse_float=scan.float_,
                           parse_int=scan.int_ if may_overflow(body) else None,
                           object_pairs_hook=scan.object_ if count_objects else None)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": exc.msg}}]) from None
    except RecursionError:
        raise BadRequestError("Malformed JSON body: nested too deeply.",
                              code="invalid_json") from None
    if scan.rejected or _SUSPECT_ESCAPE.search(body):
        problem = first_problem(value)
        if problem is not None:
            path, reason = problem
            raise RequestValidationError([{
                "type": "value_error", "loc": ("body", *path), "msg": reason, "input": None}])
    return value


def _utf8(body: bytes, yielding: bool, chunk: int = 256 * 1024) -> str:
    """``body`` decoded strictly; ``yielding``: in chunks, so that other threads get the GIL
    between them (one call on 4 MB holds it for tens of ms)."""
    if not yielding:
        return body.decode("utf-8")
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    parts = []
    for start in range(0, len(body), chunk):
        try:
            parts.append(decoder.decode(body[start:start + chunk]))
        except UnicodeDecodeError as exc:
            exc.start += start
            raise
    pending = len(decoder.getstate()[0])  # an incomplete sequence at the end
    try:
        parts.append(decoder.decode(b"", final=True))
    except UnicodeDecodeError as exc:
        exc.start += len(body) - pending
        raise
    return "".join(parts)


def string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain the NUL character (\\u0000)"
    if _SURROGATE.search(text):
        return "must be valid Unicode: it holds a lone UTF-16 surrogate (such as \\ud800 " \
               "without its pair)"
    return None


def first_problem(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The path and reason of the first refused value in document order (iterative: a body
    may nest as deep as ``json`` allows)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            reason = string_problem(node)
            if reason is not None:
                return path, reason
        elif isinstance(node, _Rejected):
            return path, node.reason
        elif isinstance(node, dict):
            children = []
            for key, child in node.items():
                reason = string_problem(key)
                if reason is not None:
                    return (*path, _printable(key)), f"key {reason}"
                children.append((child, (*path, key)))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend(reversed([(child, (*path, i)) for i, child in enumerate(node)]))
    return None


def _printable(text: str) -> str:
    """``text`` safe to put in a message or a log line (surrogates and NUL escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
