"""API keys: with keys configured, every /v1 request must carry ``Authorization: Bearer <key>``
(or ``x-api-key: <key>``, as Anthropic's clients send it).

Keys are compared in constant time (on their SHA-256 digests, so neither the content nor the
length of a configured key leaks through timing). No key is ever logged or echoed: the access log
names a key by its position in the configured list.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from labs_api.errors import error_body
from labs_api.ops.context import current_request

log = logging.getLogger("labs_api.security")

BEARER_SCHEME = "APIKey"
#: What stays open without a key (and outside the rate limit): probes, metrics, the docs and
#: the playground's page and files (the playground itself sends the key with its API calls).
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect",
                          "/redoc", "/openapi.json", "/"})
PUBLIC_PREFIXES = ("/docs-assets/", "/ui/")


def route_path(scope: Scope) -> str:
    """The path the router matches: ``scope["path"]`` without the ``root_path`` prefix, which
    ASGI servers include in ``path`` (``uvicorn --root-path /api`` serves ``/v1/models`` as
    path ``/api/v1/models``), as Starlette's router strips it."""
    path: str = scope["path"]
    root = scope.get("root_path", "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


def is_protected(path: str) -> bool:
    """Every path but the public ones needs a key. Failing closed means no prefix, proxy or
    spelling of a path can reach a route without one: it is protected or it is a 404."""
    return path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES)


def needs_key(scope: Scope) -> bool:
    return scope["type"] == "http" and is_protected(route_path(scope))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class APIKeys:
    """The accepted keys, kept only as digests."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one API key is needed")
        self._digests = [_digest(k) for k in keys]

    def __len__(self) -> int:
        return len(self._digests)

    def number_of(self, presented: str) -> int | None:
        """The 1-based position of ``presented`` among the keys, or None if it is not one.
        Every key is compared, so the time taken does not depend on which one matched."""
        given = _digest(presented)
        found = None
        for number, digest in enumerate(self._digests, start=1):
            if hmac.compare_digest(given, digest) and found is None:
                found = number
        return found


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def x_api_key(scope: Scope) -> str | None:
    """Anthropic's clients send the key as ``x-api-key``."""
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            token = value.decode("latin-1").strip()
            return token or None
    return None


def _unauthorized(message: str) -> JSONResponse:
    return JSONResponse(
        error_body(message, "invalid_request_error", None, "invalid_api_key"),
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


class APIKeyMiddleware:
    """401 for a /v1 request without a valid bearer key, in OpenAI's error shape."""

    def __init__(self, app: ASGIApp, keys: APIKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not needs_key(scope):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope) or x_api_key(scope)
        if token is None:
            response = _unauthorized(
                "Missing API key: send it in the Authorization header as 'Bearer YOUR_KEY' "
                "(or as x-api-key)."
            )
            await response(scope, receive, send)
            return
        number = self.keys.number_of(token)
        if number is None:
            await _unauthorized("Incorrect API key provided.")(scope, receive, send)
            return
        record = current_request()
        if record is not None:
            record.api_key_number = number
        await self.app(scope, receive, send)


def document_bearer_auth(app: FastAPI) -> None:
    """Declare the bearer key in the OpenAPI schema, so /docs offers 'Authorize' and sends it."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = default_openapi()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "One of the keys set in LABS_API_KEY or LABS_API_KEY_FILE",
        }
        for path, operations in schema.get("paths", {}).items():
            if is_protected(path):
                for operation in operations.values():
                    if isinstance(operation, dict):
                        operation["security"] = [{BEARER_SCHEME: []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
