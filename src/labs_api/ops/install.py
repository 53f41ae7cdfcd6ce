"""Wiring the operations layer into an app, in one place, in the right order."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from labs_api.api.docs import install_docs
from labs_api.api.transcription.protocol import FORM_OVERHEAD_BYTES, MAX_FILE_BYTES
from labs_api.api.transcription.router import TRANSCRIPTION_PATHS
from labs_api.ops.access_log import REQUEST_ID_HEADER, RequestLogMiddleware, RouteTemplates
from labs_api.ops.body_limit import BodySizeLimitMiddleware
from labs_api.ops.metrics import Metrics
from labs_api.ops.metrics import router as metrics_router
from labs_api.ops.rate_limit import RateLimiter, RateLimitMiddleware
from labs_api.ops.security import APIKeyMiddleware, APIKeys, document_bearer_auth
from labs_api.settings import Settings

log = logging.getLogger("labs_api")


def install_operations(app: FastAPI, settings: Settings) -> None:
    """Add the docs pages, /metrics and the middleware stack to ``app``.

    A request passes, outermost first: request log (id, timing, metrics) → CORS → API key →
    rate limit → body size → the routes. CORS sits outside the key check so that preflight
    requests (which carry no key) are answered and refusals carry CORS headers a browser can
    read; the rate limit sits inside it so that it counts per valid key.
    """
    install_docs(app)
    metrics = Metrics(app.state.registry)
    app.state.metrics = metrics
    if settings.metrics:
        app.include_router(metrics_router)

    # add_middleware puts each new layer outside the ones before it: innermost first.
    if settings.max_body_bytes:
        # Audio uploads may be as large as OpenAI accepts (25 MiB), whatever the general limit.
        audio_limit = max(settings.max_body_bytes, MAX_FILE_BYTES + FORM_OVERHEAD_BYTES)
        app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes,
                           path_limits=dict.fromkeys(TRANSCRIPTION_PATHS, audio_limit))
    if settings.rate_limit:
        app.add_middleware(RateLimitMiddleware, limiter=RateLimiter(settings.rate_limit))
    keys = settings.api_keys()
    if keys:
        app.add_middleware(APIKeyMiddleware, keys=APIKeys(keys))
        document_bearer_auth(app)
    elif settings.api_key is not None or settings.api_key_file is not None:
        raise SystemExit("labs-api: LABS_API_KEY / LABS_API_KEY_FILE are set but hold no key; "
                         "unset them to run without authentication")
    origins = settings.cors_origin_list()
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(RequestLogMiddleware, templates=RouteTemplates(app), metrics=metrics)

    log.info(
        "operations: API keys %s; rate limit %s; CORS %s; request bodies up to %s; /metrics %s",
        f"on ({len(keys)})" if keys else "off",
        settings.rate_limit or "off",
        ", ".join(origins) if origins else "off",
        f"{settings.max_body_bytes} bytes" if settings.max_body_bytes else "any size",
        "on" if settings.metrics else "off",
    )
