"""Deploying the app on a Ray cluster: ``labs-api serve --ray`` and the ``serve run`` target.

``serve run labs_api.ray_serve.launcher:build`` deploys the same application from the LABS_*
environment with Ray's own CLI (its HTTP options then come from Serve, not LABS_HOST/PORT).
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from typing import Any

from labs_api.engines.optional import MissingBackendError, require
from labs_api.ray_serve.options import (
    APP_NAME,
    DEPLOYMENT_NAMES,
    check,
    ingress_options,
    model_options,
)
from labs_api.settings import Settings, load_settings

log = logging.getLogger("labs_api.ray_serve")


def build_application(settings: Settings) -> Any:
    """The Serve application: the ingress bound to one deployment per served model."""
    from labs_api.catalog import build_registry
    from labs_api.ray_serve.replicas import REPLICAS, Ingress

    handles: dict[str, Any] = {}
    seen: collections.Counter[str] = collections.Counter()
    for slot in build_registry(settings).slots:  # (no model is loaded here)
        if slot.kind not in REPLICAS:
            log.warning("%s model %s is not served under Ray Serve (no deployment for it yet)",
                        slot.kind, slot.model_id)
            continue
        seen[slot.kind] += 1
        name = DEPLOYMENT_NAMES[slot.kind] + (str(seen[slot.kind]) if seen[slot.kind] > 1 else "")
        deployment = REPLICAS[slot.kind].options(name=name, **model_options(settings, slot.kind))
        handles[slot.model_id] = deployment.bind(settings, slot.model_id)
    return Ingress.options(**ingress_options(settings)).bind(settings, handles)


def build(args: dict[str, str] | None = None) -> Any:
    """Application builder for ``serve run labs_api.ray_serve.launcher:build``."""
    require("ray.serve", extra="ray")
    settings = load_settings()
    check(settings)
    return build_application(settings)


def serve_on_ray(settings: Settings, *, address: str | None = None,
                 detach: bool = False) -> None:
    """Connect to the Ray cluster at ``address`` (``RAY_ADDRESS``, else a cluster started on
    this machine with ``ray start``, else a new local one), deploy, and serve until
    interrupted; then delete the application. ``detach`` leaves it running and returns."""
    try:
        ray = require("ray", extra="ray")
        require("ray.serve", extra="ray")
    except MissingBackendError as exc:
        raise SystemExit(f"labs-api serve --ray: {exc}") from None
    from ray import serve

    check(settings)
    ray.init(address=address, namespace="labs-api", logging_level=settings.log_level.upper())
    try:
        serve.start(proxy_location=settings.ray_proxy_location,
                    http_options={"host": settings.host, "port": settings.port})
        host, port = _http_address(settings)
        log.info("deploying %s on Ray (%s)", APP_NAME, ray.get_runtime_context().gcs_address)
        started = time.perf_counter()
        try:
            serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
        except KeyboardInterrupt:  # e.g. replicas waiting for resources the cluster lacks
            log.warning("interrupted while deploying: deleting the %s application", APP_NAME)
            _delete(serve)
            raise SystemExit(130) from None
        stop = threading.Event()
        if not detach:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        print(f"labs-api: serving on http://{host}:{port} through Ray Serve "
              f"(application '{APP_NAME}', ready in {time.perf_counter() - started:.0f} s)",
              flush=True)
        if detach:
            return
        while not stop.wait(1.0):
            pass
        log.info("stopping: deleting the %s application", APP_NAME)
        _delete(serve)
    finally:
        ray.shutdown()


def _delete(serve: Any) -> None:
    serve.delete(APP_NAME)
    if not serve.status().applications:
        serve.shutdown()  # frees the HTTP port; other applications would keep Serve up


def _http_address(settings: Settings) -> tuple[str, int]:
    """Where Serve's HTTP proxy listens. Serve's HTTP options are fixed while it runs on a
    cluster: if it was already running, LABS_HOST/LABS_PORT cannot move it."""
    try:
        from ray.serve.context import _get_global_client

        config = _get_global_client().http_config
        actual = (config.host, config.port)
    except Exception:  # a private API: keep to the settings if it changed
        return settings.host, settings.port
    if actual != (settings.host, settings.port):
        log.warning("Ray Serve already runs on this cluster with its HTTP proxy on %s:%s; "
                    "LABS_HOST/LABS_PORT (%s:%s) apply after 'serve shutdown'", *actual,
                    settings.host, settings.port)
    return actual
