"""Errors the API can return, and the one place that turns them into HTTP responses.

Bodies follow OpenAI's ``{"error": {"message", "type", "param", "code"}}`` shape so the official
clients raise the right exception class; validation errors (422) keep FastAPI's ``detail`` list,
as the spec shows, and carry the same ``error`` object beside it.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from labs_api.engines import errors as engine_errors

log = logging.getLogger("labs_api")


class APIError(Exception):
    """An error with a status code and a message that is safe to show the client."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class BadRequestError(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthError(BadRequestError):
    code = "context_length_exceeded"


class UnsupportedParameterError(APIError):
    """422: a field this server (or this model's engine) cannot honour. Never ignored."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "unsupported_parameter"

    def body(self) -> dict[str, Any]:
        loc = ["body", *(self.param.split(".") if self.param else [])]
        detail = [{"type": "unsupported", "loc": loc, "msg": self.message, "input": None}]
        return {"detail": detail, **super().body()}


class ModelNotFoundError(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class ServiceUnavailableError(APIError):
    """503: the model is loading, or the server is too busy to take the request now."""

    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class EngineError(APIError):
    """A real failure inside an engine; the message names what failed, never a traceback."""

    status_code = 500
    error_type = "server_error"


def api_error_for(exc: BaseException) -> APIError | None:
    """The HTTP error for an exception: itself if it is one, the mapping of an engine's error,
    or None for anything else (an unexpected failure)."""
    if isinstance(exc, APIError):
        return exc
    if not isinstance(exc, engine_errors.EngineRequestError):
        return None
    message, param, code = exc.message, exc.param, exc.code
    if isinstance(exc, engine_errors.PromptTooLong):
        return ContextLengthError(message, param=param or "messages", code=code)
    if isinstance(exc, engine_errors.InvalidRequest):
        return BadRequestError(message, param=param, code=code)
    if isinstance(exc, engine_errors.UnsupportedRequest):
        return UnsupportedParameterError(message, param=param, code=code)
    if isinstance(exc, engine_errors.EngineBusy):
        return ServiceUnavailableError(message, retry_after=exc.retry_after, code=code)
    return EngineError(message, param=param, code=code)


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class SafeJSONResponse(JSONResponse):
    """JSON that always renders: ASCII escapes, so a string holding a lone surrogate (a model
    id quoted in a 404, say) cannot fail to encode and turn an error into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


#: Characters of a validation error's ``input`` echoed back (FastAPI echoes the whole value,
#: which for a model-level error is the whole body).
ECHO_BUDGET = 2000


def jsonable(value: Any, budget: list[int] | None = None) -> Any:
    """``value`` as plain JSON data, whatever it holds (bytes, NaN, surrogates, exceptions),
    cut short once about ``ECHO_BUDGET`` characters have been produced."""
    budget = budget if budget is not None else [ECHO_BUDGET]
    if budget[0] <= 0:
        return "..."
    if value is None or isinstance(value, bool | int):
        budget[0] -= 5
        return value
    if isinstance(value, float):
        budget[0] -= 8
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if budget[0] <= 0:
                out["..."] = "cut short"
                break
            out[str(jsonable(str(key), budget))] = jsonable(item, budget)
        return out
    if isinstance(value, list | tuple | set):
        items = []
        for item in value:
            if budget[0] <= 0:
                items.append("...")
                break
            items.append(jsonable(item, budget))
        return items
    if isinstance(value, bytes):
        value = value[: max(budget[0], 0)].decode("utf-8", "backslashreplace")
    text = value if isinstance(value, str) else str(value)
    text = text[: max(budget[0], 0)].encode("utf-8", "backslashreplace").decode("utf-8")
    budget[0] -= len(text) + 2
    return text


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
        if len(parts) == 20:
            parts.append(f"... and {len(errors) - 20} more errors")
            break
    first_loc = [str(p) for p in errors[0].get("loc", ()) if p != "body"] if errors else []
    return "; ".join(parts), (".".join(first_loc) or None)


def _is_malformed_json(errors: list[dict[str, Any]]) -> bool:
    return any(err.get("type") == "json_invalid" for err in errors)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error its status and body."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        return SafeJSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(engine_errors.EngineRequestError)
    async def _engine_error(request: Request, exc: engine_errors.EngineRequestError,
                            ) -> JSONResponse:
        mapped = api_error_for(exc)
        assert mapped is not None
        return await _api_error(request, mapped)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if _is_malformed_json(errors):
            detail = errors[0].get("ctx", {}).get("error", "could not parse the body")
            return SafeJSONResponse(
                error_body(f"Malformed JSON body: {detail}", "invalid_request_error"),
                status_code=400,
            )
        message, param = _validation_message(errors)
        # Whatever the inputs held (bytes that are not UTF-8, NaN, surrogates), as plain JSON.
        body = {"detail": [jsonable(err) for err in errors[:100]]}
        body.update(jsonable(error_body(message, "invalid_request_error", param,
                                        "invalid_value"), [len(message) + 1000]))
        return SafeJSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = "not_found" if exc.status_code == 404 else None
        return SafeJSONResponse(
            error_body(str(exc.detail), error_type, None, code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return SafeJSONResponse(
            error_body(f"Internal error: {type(exc).__name__}", "server_error"), status_code=500
        )
