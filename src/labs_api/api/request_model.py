"""The base of every request schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RequestModel(BaseModel):
    """Unknown fields are refused (422), never ignored; numbers must be finite. Over HTTP the
    strict decoding (``labs_api.api.decoding``) already refuses NaN and Infinity; this also
    holds for a request built in-process. Subclasses' ``model_config`` merges with this one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def keep_alive_field() -> Any:
    """The ``keep_alive`` extension (as Ollama's): how long the model stays loaded once idle."""
    return Field(None, description="Extension: how long the model stays loaded after this "
                 "request: seconds, a duration ('5m'), -1 for ever, 0 to unload it after "
                 "this request (default: the model's own keep_alive)")
