"""What the server knows about the request being served, for the access log and metrics.

The request-log middleware sets one :class:`RequestRecord` per request in a context variable;
tasks started while serving it (streams, choices gathered concurrently) copy the context, so
they see the same record and can add to it (the API key's number, tokens generated). Code that
generates text reports through :func:`report_first_token` and :func:`report_generation`, which
do nothing outside a request.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Protocol


class GenerationObserver(Protocol):
    """Told about each generation of the request it serves (the metrics are one)."""

    def first_token(self, model_id: str, seconds: float) -> None: ...

    def finished(self, model_id: str, prompt_tokens: int, completion_tokens: int) -> None: ...


@dataclass
class RequestRecord:
    request_id: str
    method: str
    path: str
    observer: GenerationObserver | None = None
    started: float = field(default_factory=time.perf_counter)
    api_key_number: int | None = None  # 1-based position among the configured keys
    completion_tokens: int | None = None  # generated, summed over the request's choices


_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "labs_request", default=None
)


def current_request() -> RequestRecord | None:
    """The record of the request being served here, or None outside a request."""
    return _current.get()


def start_request(record: RequestRecord) -> contextvars.Token:
    return _current.set(record)


def end_request(token: contextvars.Token) -> None:
    _current.reset(token)


def report_first_token(model_id: str, seconds: float) -> None:
    """A request's generations produced their first piece ``seconds`` after being submitted."""
    record = _current.get()
    if record is not None and record.observer is not None:
        record.observer.first_token(model_id, seconds)


def report_generation(model_id: str, prompt_tokens: int, completion_tokens: int) -> None:
    """One generation (one choice) finished."""
    record = _current.get()
    if record is None:
        return
    record.completion_tokens = (record.completion_tokens or 0) + completion_tokens
    if record.observer is not None:
        record.observer.finished(model_id, prompt_tokens, completion_tokens)
