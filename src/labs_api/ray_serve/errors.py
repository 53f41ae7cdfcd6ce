"""Exceptions across the Ray boundary.

An engine error raised in a model replica must reach the ingress as the same exception, so the
shared HTTP code gives it the same status and body. Exceptions do not always survive pickling
(one whose ``__init__`` takes other arguments than its ``args`` fails to unpickle), so a replica
sends a plain report - class, args and attributes - and the ingress rebuilds the exception from
it without calling ``__init__``. Failures of Ray itself (a replica that died, a full queue)
become 503s.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any

from labs_api.errors import APIError, EngineError, ServiceUnavailableError

#: Seconds a client is asked to wait after a replica failure (Ray replaces it meanwhile).
RETRY_AFTER_S = 2


@dataclass(frozen=True)
class ErrorReport:
    """What is needed to raise an exception again in another process."""

    module: str
    qualname: str
    args: tuple[Any, ...]
    text: str
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: BaseException) -> ErrorReport:
        kind = type(exc)
        args = exc.args if _picklable(exc.args) else (str(exc),)
        state = {k: v for k, v in vars(exc).items() if _picklable(v)}
        return cls(kind.__module__, kind.__qualname__, args, str(exc), state)

    def rebuild(self) -> BaseException:
        """The exception again: same class, args and attributes (``__init__`` is not run)."""
        kind = _find_class(self.module, self.qualname)
        if kind is None:
            # A class this process has not imported (e.g. a torch error): keep its name.
            name = self.qualname.rsplit(".", 1)[-1]
            kind = type(name, (RuntimeError,), {"__module__": self.module})
        try:
            exc = kind.__new__(kind, *self.args)
            exc.args = self.args
            exc.__dict__.update(self.state)
        except Exception:
            return EngineError(f"{self.qualname}: {self.text}")
        return exc


class ReplicaError(Exception):
    """Raised by a model replica in place of its engine's exception; always pickles."""

    def __init__(self, report: ErrorReport) -> None:
        super().__init__(report)
        self.report = report

    def __str__(self) -> str:
        return f"{self.report.qualname}: {self.report.text}"


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def _find_class(module: str, qualname: str) -> type[BaseException] | None:
    """The class, from a module this process has (labs_api's own are imported if needed)."""
    if module not in sys.modules:
        if not module.startswith("labs_api."):
            return None
        try:
            importlib.import_module(module)
        except ImportError:
            return None
    target: Any = sys.modules[module]
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, BaseException):
        return target
    return None


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
    if isinstance(exc, APIError):
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
