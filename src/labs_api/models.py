"""The model registry: which model id is served by which engine, loading, and readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from labs_api.errors import EngineError, ModelNotFoundError, ServiceUnavailableError

if TYPE_CHECKING:
    from labs_api.workers.supervisor import EngineWorker, WorkerOptions

log = logging.getLogger("labs_api.models")

ModelKind = Literal["chat", "embedding", "speech", "transcription", "rerank"]
LoadState = Literal["waiting", "loading", "ready", "restarting", "failed"]


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
    worker: EngineWorker | None = None  # when the engine runs in a worker process
    _loading: asyncio.Task[None] | None = None

    @property
    def restarts(self) -> int:
        return self.worker.restarts if self.worker is not None else 0

    def worker_state(self, state: str, error: str | None) -> None:
        """The worker's news: restarting, ready again, or failed for good."""
        if state in ("ready", "restarting", "failed"):
            self.state = state  # type: ignore[assignment]
            self.error = error


class ModelRegistry:
    """Holds every configured model. Loads them one at a time: in a worker process of its own
    each when ``workers`` is given, else on a loader thread of this process."""

    def __init__(self, slots: list[ModelSlot], workers: WorkerOptions | None = None) -> None:
        ids = [s.model_id for s in slots]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be unique, got {ids}")
        self.slots = slots
        self.workers = workers
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._cpu_board: Any = None

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
        """Load ``slot`` once. The load is a task of its own, shielded: a request that started
        it and then went away (its task cancelled) does not stop it, and the next request
        gets the model."""
        if slot._loading is None:
            slot._loading = asyncio.create_task(self._load(slot))
        await asyncio.shield(slot._loading)

    async def _load(self, slot: ModelSlot) -> None:
        slot.state = "loading"
        started = time.perf_counter()
        try:
            slot.engine = await self._start_engine(slot)
        except Exception as exc:  # keep serving the other models
            slot.state = "failed"
            slot.error = f"{type(exc).__name__}: {exc}"
            log.error("failed to load %s model %s: %s", slot.kind, slot.model_id, slot.error)
            return
        slot.load_seconds = time.perf_counter() - started
        slot.state = "ready"
        where = f" in worker pid {slot.worker.pid}" if slot.worker is not None else ""
        log.info("%s model %s ready in %.1f s%s", slot.kind, slot.model_id, slot.load_seconds,
                 where)

    async def _start_engine(self, slot: ModelSlot) -> Any:
        if self.workers is None:
            return await asyncio.get_running_loop().run_in_executor(self._loader, slot.load)
        from labs_api.compute import CpuWorkBoard
        from labs_api.engines.remote import PROXIES
        from labs_api.workers.supervisor import EngineWorker

        if self._cpu_board is None:
            self._cpu_board = CpuWorkBoard(workers=max(16, len(self.slots)))
        worker = EngineWorker(slot.model_id, slot.kind, slot.load, self.workers,
                              cpu_work=self._cpu_board.spec(self.slots.index(slot)),
                              on_state=slot.worker_state)
        slot.worker = worker
        attributes = await worker.start()
        proxy = PROXIES[slot.kind](worker, attributes)
        worker.on_attributes(proxy.update)
        return proxy

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
        if slot.state == "restarting":
            raise ServiceUnavailableError(
                f"The engine of model '{slot.model_id}' is restarting ({slot.error}); "
                "retry shortly.", retry_after=2, code="engine_restarting")
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

    async def aclose(self) -> None:
        """Stop every engine: end the worker processes (each closes its engine), close the
        engines of this process."""
        workers = [s.worker for s in self.slots if s.worker is not None]
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
        self.close()

    def close(self) -> None:
        for slot in self.slots:
            if slot.worker is not None:
                slot.worker.kill_now()  # a no-op once aclose ended it
            if slot.engine is not None and hasattr(slot.engine, "close"):
                try:
                    slot.engine.close()
                except Exception:  # shutting down: report and go on
                    log.exception("closing %s failed", slot.model_id)
        self._loader.shutdown(wait=False, cancel_futures=True)
        if self._cpu_board is not None:
            self._cpu_board.close()
