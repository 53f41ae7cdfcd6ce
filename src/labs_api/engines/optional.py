"""Importing heavy backends only when a configured model needs them."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingBackendError(RuntimeError):
    """A configured model needs a package that is not installed."""


def require(module: str, *, package: str | None = None, extra: str | None = None) -> ModuleType:
    """Import ``module``, or explain which package (or extra of labs-api) to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = f"pip install 'labs-api[{extra}]'" if extra else f"pip install {package or module}"
        raise MissingBackendError(
            f"{module} is needed for this model but could not be imported ({exc}); "
            f"install it with: {how}"
        ) from exc
