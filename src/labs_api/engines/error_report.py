"""Exceptions across process boundaries (engine workers, Ray replicas).

An engine error raised in another process must reach the HTTP process as the same exception, so
the shared HTTP code gives it the same status and body. Exceptions do not always survive
pickling (one whose ``__init__`` takes other arguments than its ``args`` fails to unpickle), so
the engine's side sends a plain report - class, args and attributes - and this side rebuilds
the exception from it without calling ``__init__``.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any

from labs_api.engines.errors import EngineFailed


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
            return EngineFailed(f"{self.qualname}: {self.text}")
        return exc


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
