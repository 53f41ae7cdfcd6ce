"""The base of every request schema."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    """Unknown fields are refused (422), never ignored; numbers must be finite. Over HTTP the
    strict decoding (``labs_api.api.decoding``) already refuses NaN and Infinity; this also
    holds for a request built in-process. Subclasses' ``model_config`` merges with this one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
