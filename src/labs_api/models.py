"""The model registry: which model id is served by which engine, loading, and readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from labs_api.errors import EngineError, ModelNotFoundError, ServiceUnavailableError

log = logging.getLogger("labs_api.models")

ModelKind = Literal["chat", "embedding", "speech"]
LoadState = Literal["waiting", "loading", "ready", "failed"]


@dataclass
class ModelSlot:
    """One configured model: its public id, what kind it is, and how to load its engine."""

    model_id: str
    kind: ModelKind
    load: Callable[[], Any]
    description: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    state: LoadState = "waiting"
    engine: Any = None
    error: str | None = None
    load_seconds: float | None = None
    _lock: asyncio.Lock | None = None


class ModelRegistry:
    """Holds every configured model. Loads them one at a time on a loader thread."""

    def __init__(self, slots: list[ModelSlot]) -> None:
        ids = [s.model_id for s in slots]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be unique, got {ids}")
        self.slots = slots
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")

    def ids(self, kind: ModelKind | None = None) -> list[str]:
        return [s.model_id for s in self.slots if kind is None or s.kind == kind]

    def find(self, model_id: str) -> ModelSlot | None:
        return next((s for s in self.slots if s.model_id == model_id), None)

    def all_ready(self) -> bool:
        return all(s.state == "ready" for s in self.slots)

    async def load_all(self) -> None:
        """Load every model in order, logging progress. A failure is logged and kept per model."""
        for number, slot in enumerate(self.slots, start=1):
            log.info("loading %s model %s (%d/%d)", slot.kind, slot.model_id, number,
                     len(self.slots))
            await self._ensure_loaded(slot)

    async def _ensure_loaded(self, slot: ModelSlot) -> None:
        if slot._lock is None:
            slot._lock = asyncio.Lock()
        async with slot._lock:
            if slot.state in ("ready", "failed"):
                return
            slot.state = "loading"
            started = time.perf_counter()
            try:
                slot.engine = await asyncio.get_running_loop().run_in_executor(
                    self._loader, slot.load
                )
            except Exception as exc:  # keep serving the other models
                slot.state = "failed"
                slot.error = f"{type(exc).__name__}: {exc}"
                log.error("failed to load %s model %s: %s", slot.kind, slot.model_id, slot.error)
                return
            slot.load_seconds = time.perf_counter() - started
            slot.state = "ready"
            log.info("%s model %s ready in %.1f s", slot.kind, slot.model_id, slot.load_seconds)

    async def engine(self, kind: ModelKind, model_id: str | None = None) -> Any:
        """The engine serving ``model_id`` (or the first model of ``kind`` when None).

        Raises 404 for an id that is not served as ``kind``, 503 while it is loading, and 500
        when it failed to load. With preloading off, the first request loads the model.
        """
        slot = self._slot_for(kind, model_id)
        if slot.state == "loading":
            raise ServiceUnavailableError(
                f"Model '{slot.model_id}' is still loading; retry shortly.",
                retry_after=2,
                code="model_loading",
            )
        if slot.state == "waiting":
            await self._ensure_loaded(slot)
        if slot.state == "failed":
            raise EngineError(f"Model '{slot.model_id}' failed to load: {slot.error}")
        return slot.engine

    def _slot_for(self, kind: ModelKind, model_id: str | None) -> ModelSlot:
        candidates = [s for s in self.slots if s.kind == kind]
        if model_id is None:
            if candidates:
                return candidates[0]
            raise ModelNotFoundError(f"No {kind} model is configured on this server.",
                                     param="model")
        for slot in candidates:
            if slot.model_id == model_id:
                return slot
        served = ", ".join(repr(s.model_id) for s in candidates) or "none"
        raise ModelNotFoundError(
            f"The model '{model_id}' is not served as {'an' if kind[0] in 'aeiou' else 'a'} "
            f"{kind} model here. "
            f"Served {kind} models: {served}.",
            param="model",
        )

    def close(self) -> None:
        for slot in self.slots:
            if slot.engine is not None and hasattr(slot.engine, "close"):
                try:
                    slot.engine.close()
                except Exception:  # shutting down: report and go on
                    log.exception("closing %s failed", slot.model_id)
        self._loader.shutdown(wait=False, cancel_futures=True)
