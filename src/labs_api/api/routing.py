"""The route class of every endpoint with a JSON body: strict decoding, then the cheap limits,
then FastAPI's own validation and the endpoint.

FastAPI reads the JSON through ``Request.json()``, which returns the value cached on the
request; the value decoded here is put there, so the body is parsed once, strictly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from labs_api.api.decoding import decode_body
from labs_api.api.limits import CHECKS, RequestLimits

#: Bodies larger than this are decoded and checked on a worker thread, off the event loop.
INLINE_DECODE_BYTES = 256 * 1024
DEFAULT_LIMITS = RequestLimits()


def decode_and_check(body: bytes, content_type: str | None, path: str,
                     limits: RequestLimits, yielding: bool = False) -> Any:
    value = decode_body(body, content_type, yielding=yielding)
    check = CHECKS.get(path)
    if check is not None:
        check(value, limits)
    return value


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        path = self.path

        async def strict_handler(request: Request) -> Response:
            body = await request.body()
            if body:
                limits = getattr(request.app.state, "limits", DEFAULT_LIMITS)
                args = (body, request.headers.get("content-type"), path, limits)
                if len(body) > INLINE_DECODE_BYTES:
                    value = await asyncio.to_thread(decode_and_check, *args, True)
                else:
                    value = decode_and_check(*args)
                request._json = value  # what Request.json() returns to FastAPI
            return await handler(request)

        return strict_handler
