"""What engines raise when a request cannot be served. Engines know nothing of HTTP: the API
layer alone turns these into status codes and bodies (``labs_api.errors.api_error_for``).

Each error carries a message safe to show the client, the request field it concerns (if any)
and a short machine-readable code. They cross process boundaries (engine workers, Ray
replicas) as plain reports and are rebuilt on the other side.
"""

from __future__ import annotations


class EngineRequestError(Exception):
    """Base class: a request an engine could not serve, and why."""

    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(EngineRequestError):
    """The request itself is wrong for this model (bad grammar, rejected messages...)."""


class PromptTooLong(InvalidRequest):
    """The prompt does not fit in the model's context."""

    code = "context_length_exceeded"


class UnsupportedRequest(EngineRequestError):
    """A field this engine cannot honour (never silently ignored)."""

    code = "unsupported_parameter"


class EngineBusy(EngineRequestError):
    """No capacity now (queue full, waited too long): retry after ``retry_after`` seconds."""

    code = "server_overloaded"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class EngineUnavailable(EngineBusy):
    """The engine is not there to serve right now (restarting, shutting down)."""

    code = "engine_unavailable"


class EngineFailed(EngineRequestError):
    """The engine failed while serving the request; the same request would fail again."""

    code = "engine_failed"
