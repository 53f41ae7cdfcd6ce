"""Error responses, as documented in the OpenAPI schema of every endpoint."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON or prompt too long"},
    404: {"model": ErrorResponse, "description": "Model not served"},
    500: {"model": ErrorResponse, "description": "Model failed to load or run"},
    503: {"model": ErrorResponse, "description": "Model loading or server overloaded"},
}
