"""Proxy engines: the ingress's stand-ins for the engines that run in the model replicas.

Each proxy looks to the HTTP layer like the engine it stands for (the same attributes, copied
from the replica, and the same methods) and forwards every call through a Ray Serve
``DeploymentHandle``; streams are streaming handle calls, so chunks arrive as the replica
yields them, and closing a stream cancels the call in the replica. Errors come back as the
engine's own exceptions, or as 503 when a replica died (``errors.from_ray``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from labs_api.catalog import build_registry
from labs_api.engines.remote import PROXIES, RemoteEngine
from labs_api.models import ModelKind, ModelRegistry
from labs_api.ray_serve.errors import from_ray
from labs_api.settings import Settings

log = logging.getLogger("labs_api.ray_serve")

#: How long the ingress waits for a model deployment to answer its first call.
CONNECT_TIMEOUT_S = 900.0


async def remote_stream(start: Callable[[], Any], what: str) -> AsyncIterator[Any]:
    """Iterate a streaming handle call, started on the first iteration (never before, so
    a stream that is dropped unread sends nothing). Closing early cancels the call."""
    finished = False
    try:
        responses = start()
    except Exception as exc:
        raise from_ray(exc, what) from None
    try:
        async for item in responses:
            yield item
        finished = True
    except Exception as exc:
        finished = True
        raise from_ray(exc, what) from None
    finally:
        if not finished:
            responses.cancel()


class RayTransport:
    """Calls on a model deployment through its ``DeploymentHandle``; engine errors come back
    as the engine's own exceptions, failures of Ray as 503s (``errors.from_ray``)."""

    def __init__(self, handle: Any, what: str) -> None:
        self._handle = handle
        self._streaming = handle.options(stream=True)
        self.what = what

    async def call(self, method: str, *args: Any) -> Any:
        response = getattr(self._handle, method).remote(*args)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as exc:
            raise from_ray(exc, self.what) from None

    def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        return remote_stream(lambda: getattr(self._streaming, method).remote(*args), self.what)


def describe(handle: Any, what: str, timeout_s: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """The model deployment's answer to ``describe`` (blocking: call it off the event loop).
    Waits while Ray is still placing or replacing its replicas."""
    import ray.exceptions
    import ray.serve.exceptions

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return handle.describe.remote().result(timeout_s=min(60.0, timeout_s))
        except (TimeoutError, ray.exceptions.RayError,
                ray.serve.exceptions.RayServeException) as exc:
            if time.monotonic() > deadline:
                raise from_ray(exc, what) from None
            log.info("waiting for the %s deployment: %s", what, type(exc).__name__)
            time.sleep(1.0)


def connect(kind: ModelKind, handle: Any) -> RemoteEngine:
    """The proxy for a model deployment; raises the replica's load error if it had one."""
    info = describe(handle, kind)
    if info["error"] is not None:
        raise info["error"].rebuild()
    proxy = PROXIES[kind](RayTransport(handle, kind), info["attributes"])
    proxy.model_id = info["model_id"]
    return proxy


def proxy_registry(settings: Settings, handles: dict[str, Any]) -> ModelRegistry:
    """The catalog's registry (same ids, kinds, order), each slot loading a proxy engine."""
    slots = [slot for slot in build_registry(settings).slots if slot.model_id in handles]
    for slot in slots:  # (kinds without a deployment, e.g. transcription, are left out)
        slot.load = functools.partial(connect, slot.kind, handles[slot.model_id])
    # Each entry is a deployment whose replicas load it when they start and keep it: Ray
    # owns their life (and memory), so the ingress never "unloads" a proxy.
    return ModelRegistry(slots, unloading=False)
