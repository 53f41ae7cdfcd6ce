"""413 for a request body past ``LABS_MAX_BODY_BYTES``: by its Content-Length up front, and by
counting the bytes as they arrive (chunked uploads have no Content-Length)."""

from __future__ import annotations

import contextlib

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labs_api.errors import error_body


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body grows past the limit; FastAPI passes an
    HTTPException through its body parsing unchanged, so the request stops there."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


def too_large_response(limit: int) -> JSONResponse:
    return JSONResponse(
        error_body(
            f"The request body is larger than this server accepts ({limit} bytes).",
            "invalid_request_error",
            None,
            "request_too_large",
        ),
        status_code=413,
        headers={"Connection": "close"},
    )


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimitMiddleware:
    """``path_limits`` gives some paths a limit of their own (audio uploads: 25 MiB)."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope.get("path", ""), self.default_max_bytes)
        length = declared_length(scope)
        if length is not None and length > max_bytes:
            await too_large_response(max_bytes)(scope, receive, send)
            return

        received = 0
        exceeded = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded:
                return  # our 413 replaces whatever the app makes of the aborted body
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # the app let it through: answer it here
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not response_started:
            await too_large_response(max_bytes)(scope, receive, send)
