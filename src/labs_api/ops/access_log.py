"""One structured access line per request, the ``X-Request-ID`` header, and HTTP metrics.

The line is logfmt (``key=value`` pairs, values quoted when needed, so a hostile path cannot
forge a second line) on the ``labs_api.access`` logger; the same fields ride on the log record
as ``extra`` attributes for a JSON formatter. Never logged: headers, bodies, query strings, keys.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labs_api.ops.context import RequestRecord, end_request, start_request
from labs_api.ops.metrics import Metrics

log = logging.getLogger("labs_api.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}", re.ASCII)
UNMATCHED = "unmatched"


def request_id_of(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is short and plain, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RouteTemplates:
    """The route template a request is counted under (``/v1/models/{model_id}``), never the raw
    path, so metrics keep one series per endpoint.

    A routed request names its route in ``scope["route"]`` (Starlette and FastAPI set it). A
    request refused before routing (401, 413, 429) is matched here against the templates of the
    app's OpenAPI schema and its mounts; a last ``{param}`` may span slashes, as model ids do.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def of(self, scope: Scope) -> str:
        route = scope.get("route")
        template = getattr(route, "path_format", None) if route is not None else None
        if template:
            return template
        for pattern, template in self._table():
            if pattern.fullmatch(scope["path"]):
                return template
        return UNMATCHED

    def _table(self) -> list[tuple[re.Pattern[str], str]]:
        if self._patterns is None:
            templates = list(self.app.openapi().get("paths", {}))
            for route in self.app.routes:
                if isinstance(route, Mount):
                    templates.append(route.path.rstrip("/") + "/{path}")
            self._patterns = [(_compile(t), t) for t in templates]
        return self._patterns


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = ""
    for index, part in enumerate(parts):
        if part.startswith("{"):
            regex += ".+" if index == len(parts) - 2 and not parts[-1] else "[^/]+"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def logfmt(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c.isspace() or c in '"=\\' or not c.isprintable() for c in text):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class RequestLogMiddleware:
    """The outermost layer: it times every request, including those refused by the layers
    inside it (API keys, rate limit, body size)."""

    def __init__(self, app: ASGIApp, templates: RouteTemplates,
                 metrics: Metrics | None = None) -> None:
        self.app = app
        self.templates = templates
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id_of(scope), scope["method"], scope["path"],
                               observer=self.metrics)
        status = 500  # what the client gets if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = record.request_id
            await send(message)

        token = start_request(record)
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - record.started
            if self.metrics is not None:
                self.metrics.in_flight.dec()
                endpoint = self.templates.of(scope)
                self.metrics.observe_request(record.method, endpoint, status, seconds)
            self._log(record, scope, status, seconds)
            end_request(token)

    @staticmethod
    def _log(record: RequestRecord, scope: Scope, status: int, seconds: float) -> None:
        client = scope.get("client")
        fields = {
            "method": record.method,
            "path": record.path,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "request_id": record.request_id,
            "client": client[0] if client else None,
            "api_key_number": record.api_key_number,
            "completion_tokens": record.completion_tokens,
        }
        log.info(logfmt(fields), extra={"access": fields})
