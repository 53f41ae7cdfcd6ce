"""Exceptions across the Ray boundary.

An engine error raised in a model replica must reach the ingress as the same exception, so the
shared HTTP code gives it the same status and body. Exceptions do not always survive pickling
(one whose ``__init__`` takes other arguments than its ``args`` fails to unpickle), so a replica
sends a plain report - class, args and attributes - and the ingress rebuilds the exception from
it without calling ``__init__``. Failures of Ray itself (a replica that died, a full queue)
become 503s.
"""

from __future__ import annotations

from labs_api.engines.error_report import ErrorReport
from labs_api.engines.errors import EngineRequestError
from labs_api.errors import APIError, EngineError, ServiceUnavailableError

#: Seconds a client is asked to wait after a replica failure (Ray replaces it meanwhile).
RETRY_AFTER_S = 2


class ReplicaError(Exception):
    """Raised by a model replica in place of its engine's exception; always pickles."""

    def __init__(self, report: ErrorReport) -> None:
        super().__init__(report)
        self.report = report

    def __str__(self) -> str:
        return f"{self.report.qualname}: {self.report.text}"


def from_ray(exc: BaseException, what: str) -> BaseException:
    """The exception the HTTP layer should see for ``exc``, raised by a Ray Serve call to the
    ``what`` deployment: the engine's own exception, or a 503 for a failure of Ray."""
    import ray.exceptions
    import ray.serve.exceptions

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, ReplicaError):
            return cause.report.rebuild()
        if isinstance(cause, (ray.exceptions.RayError, ray.serve.exceptions.RayServeException)):
            return from_ray(cause, what)
        return EngineError(f"The {what} replica failed: {type(cause).__name__}: {cause}")
    if isinstance(exc, ReplicaError):
        return exc.report.rebuild()
    if isinstance(exc, (APIError, EngineRequestError)):
        return exc
    if isinstance(exc, ray.serve.exceptions.BackPressureError):
        return ServiceUnavailableError(
            f"Every {what} replica is busy and its queue is full; retry shortly.",
            retry_after=RETRY_AFTER_S, code="server_overloaded")
    if isinstance(exc, (ray.exceptions.RayError, ray.serve.exceptions.RayServeException)):
        return ServiceUnavailableError(
            f"The {what} replica serving this request became unavailable "
            f"({type(exc).__name__}); Ray is replacing it. Retry shortly.",
            retry_after=RETRY_AFTER_S, code="replica_unavailable")
    return exc
