"""The model registry: which model id (or alias) is served by which engine; loading on demand,
unloading when idle, the caps on what stays loaded, and readiness.

A model's engine runs in a worker process of its own (``labs_api.workers``), so unloading it
ends that process and its memory goes back to the system. A request holds a *lease* on the
model it uses for as long as its task runs (a stream: until its last byte), so an idle model
is one no request task holds; only idle models are unloaded, when their ``keep_alive`` runs
out or to make room for another (least recently used first).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from labs_api.errors import (
    BadRequestError,
    EngineError,
    ModelNotFoundError,
    ServiceUnavailableError,
)
from labs_api.keep_alive import FOREVER
from labs_api.proc_memory import tree_rss_bytes

if TYPE_CHECKING:
    from labs_api.settings import Settings
    from labs_api.workers.supervisor import EngineWorker, WorkerOptions

log = logging.getLogger("labs_api.models")

ModelKind = Literal["chat", "embedding", "speech", "transcription", "rerank"]
#: ``waiting``: not loaded yet; ``unloaded``: loaded before, unloaded since (idle, evicted or
#: asked to).
LoadState = Literal["waiting", "loading", "ready", "restarting", "failed", "unloaded"]
#: The status view's names for the states.
PUBLIC_STATE = {"waiting": "unloaded", "unloaded": "unloaded", "loading": "loading",
                "restarting": "loading", "ready": "loaded", "failed": "failed"}


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
    aliases: tuple[str, ...] = ()
    keep_alive: float = FOREVER  # the entry's default idle time before unloading
    preload: bool | None = None  # None: LABS_PRELOAD_ON_START
    memory_hint: int | None = None  # bytes expected before a load has measured it
    capabilities: tuple[str, ...] = ()
    context_length: int | None = None  # before a load tells (the engine's own after)
    # -- what happens to it (kept by the registry) --
    memory_bytes: int | None = None  # measured when it last loaded
    loaded_at: float | None = None  # wall clock
    last_used: float = 0.0  # monotonic: for least-recently-used eviction
    idle_since: float | None = None  # monotonic; None while a request holds it
    keep_alive_now: float | None = None  # set by the last request's keep_alive
    waiting: int = 0  # requests waiting for it to load
    unload_requested: bool = False  # unload as soon as no request holds it
    users: set[asyncio.Task[Any]] = field(default_factory=set)
    loaded_once: bool = False
    _loading: asyncio.Task[None] | None = None
    _preloading: bool = False
    _timer: asyncio.TimerHandle | None = None

    @property
    def restarts(self) -> int:
        return self.worker.restarts if self.worker is not None else 0

    def names(self) -> tuple[str, ...]:
        return (self.model_id, *self.aliases)

    def effective_keep_alive(self) -> float:
        return self.keep_alive if self.keep_alive_now is None else self.keep_alive_now

    def expires_at(self) -> float | None:
        """Monotonic time at which it unloads if nothing uses it; None: not scheduled."""
        if self.state != "ready" or self.idle_since is None or self.users:
            return None
        if self.unload_requested:
            return self.idle_since
        keep = self.effective_keep_alive()
        return None if keep < 0 else self.idle_since + keep

    def worker_state(self, state: str, error: str | None) -> None:
        """The worker's news: restarting, ready again, or failed for good."""
        if state in ("ready", "restarting", "failed"):
            self.state = state  # type: ignore[assignment]
            self.error = error


@dataclass(frozen=True)
class LoadLimits:
    """Caps on what stays loaded; 0 means no cap."""

    max_loaded: int = 0
    max_memory: int = 0
    wait_s: float = 60.0  # how long a load may wait for room before 503

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadLimits:
        return cls(max_loaded=settings.max_loaded_models,
                   max_memory=int(settings.max_model_memory or 0),
                   wait_s=settings.queue_timeout)


class NamedEngine:
    """An engine under the name the client asked for (an alias), so responses carry it."""

    def __init__(self, engine: Any, model_id: str) -> None:
        self.__dict__["_engine"] = engine
        self.__dict__["model_id"] = model_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_engine"], name)


class ModelRegistry:
    """Holds every configured model and decides when each is loaded. Engines load in a worker
    process of their own each when ``workers`` is given, else on a loader thread here."""

    def __init__(self, slots: list[ModelSlot], workers: WorkerOptions | None = None,
                 limits: LoadLimits | None = None, unloading: bool = True) -> None:
        names = [name for s in slots for name in s.names()]
        if len(set(names)) != len(names):
            raise ValueError(f"model ids and aliases must be unique, got {names}")
        self.slots = slots
        self.workers = workers
        self.limits = limits or LoadLimits()
        self.unloading = unloading  # False: models stay loaded (Ray Serve's deployments)
        self.preload_default = True
        self.transitions: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._by_name = {name: s for s in slots for name in s.names()}
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._cpu_board: Any = None
        self._room: asyncio.Lock | None = None
        self._changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- looking up ---------------------------------------------------------------------------

    def ids(self, kind: ModelKind | None = None) -> list[str]:
        return [s.model_id for s in self.slots if kind is None or s.kind == kind]

    def find(self, model_id: str) -> ModelSlot | None:
        """The slot an id or alias names."""
        return self._by_name.get(model_id)

    def preloads(self, slot: ModelSlot) -> bool:
        return self.preload_default if slot.preload is None else slot.preload

    def all_ready(self) -> bool:
        """Every preloaded model is loaded (or was, and was unloaded since on purpose)."""
        return all(s.state == "ready" or (s.state == "unloaded" and s.loaded_once)
                   for s in self.slots if self.preloads(s))

    def memory(self, slot: ModelSlot) -> int | None:
        """Resident bytes of the model's worker now; when not loaded, what it took last time
        (or the entry's hint)."""
        if slot.worker is not None and slot.worker.pid is not None:
            measured = tree_rss_bytes(slot.worker.pid)
            if measured:
                return measured
        return slot.memory_bytes or slot.memory_hint

    # -- state changes, each logged once and counted -------------------------------------------

    def _set_state(self, slot: ModelSlot, state: LoadState, why: str = "",
                   logged: bool = False) -> None:
        """Change state, count it; log it unless the caller logs it (``logged``)."""
        before = slot.state
        slot.state = state
        if before == state:
            return
        self.transitions[(slot.model_id, slot.kind, PUBLIC_STATE[state])] += 1
        if not logged:
                log.info("model %s (%s): %s -> %s%s", slot.model_id, slot.kind,
                     PUBLIC_STATE[before], PUBLIC_STATE[state], f" ({why})" if why else "")
        self._notify()

    def _worker_state(self, slot: ModelSlot, state: str, error: str | None) -> None:
        if state not in ("ready", "restarting", "failed") or slot.worker is None:
            return
        if state == "ready" and slot.state != "restarting":
            return  # the first start: _load says when the model is ready
        slot.error = error
        self._set_state(slot, state, error or "engine worker")  # type: ignore[arg-type]

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    # -- loading ------------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load every preloaded model in order, logging progress. A failure is logged and
        kept per model."""
        chosen = [s for s in self.slots if self.preloads(s)]
        for number, slot in enumerate(chosen, start=1):
            log.info("loading %s model %s (%d/%d)", slot.kind, slot.model_id, number,
                     len(chosen))
            slot._preloading = True
            try:
                await self._ensure_loaded(slot, "preload")
            except ServiceUnavailableError as exc:  # no room: it loads on demand later
                log.warning("not preloading %s: %s", slot.model_id, exc.message)
            finally:
                slot._preloading = False

    async def load(self, model_id: str) -> ModelSlot:
        """Load a model now (the management endpoint); a failed one is tried again."""
        slot = self._slot_named(model_id)
        if slot.state == "failed" and (slot._loading is None or slot._loading.done()):
            slot._loading = None
        if slot.state != "ready":
            slot.waiting += 1
            try:
                await self._ensure_loaded(slot, "asked to load")
            finally:
                slot.waiting -= 1
        slot.last_used = time.monotonic()
        if not slot.users:
            self._became_idle(slot)
        return slot

    async def _ensure_loaded(self, slot: ModelSlot, why: str) -> None:
        """Load ``slot`` once however many ask at the same time (one task, shielded: a request
        that started it and went away does not stop it; the next request gets the model)."""
        if slot._loading is None:
            slot._loading = asyncio.create_task(self._load(slot, why))
        await asyncio.shield(slot._loading)

    async def _load(self, slot: ModelSlot, why: str) -> None:
        before = slot.state
        self._set_state(slot, "loading", why, logged=slot._preloading)  # (load_all logs)
        try:
            async with self._room_lock():
                await self._make_room(slot)
        except ServiceUnavailableError:
            slot._loading = None
            self._set_state(slot, before, "no room")
            raise
        started = time.perf_counter()
        try:
            slot.engine = await self._start_engine(slot)
        except Exception as exc:  # keep serving the other models
            slot.error = f"{type(exc).__name__}: {exc}"
            self._set_state(slot, "failed", slot.error, logged=True)
            log.error("failed to load %s model %s: %s", slot.kind, slot.model_id, slot.error)
            if slot.worker is not None:
                await slot.worker.close()
                slot.worker = None
            return
        slot.load_seconds = time.perf_counter() - started
        slot.error = None
        slot.loaded_at = time.time()
        slot.loaded_once = True
        slot.memory_bytes = self.memory(slot) if slot.worker is not None else None
        self._set_state(slot, "ready", logged=True)
        where = f" in worker pid {slot.worker.pid}" if slot.worker is not None else ""
        log.info("%s model %s ready in %.1f s%s", slot.kind, slot.model_id, slot.load_seconds,
                 where)
        if not slot.users:
            self._became_idle(slot)
        if self.limits.max_memory:  # its real size is known now: others may have to go
            async with self._room_lock():
                await self._make_room(slot, loaded=True)

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
                              on_state=lambda state, error: self._worker_state(
                                  slot, state, error))
        slot.worker = worker
        attributes = await worker.start()
        proxy = PROXIES[slot.kind](worker, attributes)
        worker.on_attributes(proxy.update)
        return proxy

    # -- room: LABS_MAX_LOADED_MODELS and LABS_MAX_MODEL_MEMORY --------------------------------

    def _room_lock(self) -> asyncio.Lock:
        if self._room is None:
            self._room = asyncio.Lock()
        return self._room

    def _shortage(self, slot: ModelSlot, loaded: bool = False) -> str | None:
        """Why ``slot`` does not fit beside the models loaded now; None when it does."""
        others = [s for s in self.slots if s is not slot
                  and s.state in ("ready", "loading", "restarting")]
        limits = self.limits
        if limits.max_loaded and len(others) + 1 > limits.max_loaded:
            return (f"{len(others)} models are loaded (LABS_MAX_LOADED_MODELS="
                    f"{limits.max_loaded})")
        if limits.max_memory:
            used = sum(self.memory(s) or 0 for s in others)
            need = self.memory(slot) or 0
            if used + need > limits.max_memory and (others or not loaded):
                if not others:
                    return None  # alone it may exceed the cap: nothing to unload for it
                return (f"the loaded models hold {used / 1e6:.0f} MB and '{slot.model_id}' "
                        f"{'holds' if loaded else 'needs'} {need / 1e6:.0f} MB "
                        f"(LABS_MAX_MODEL_MEMORY={limits.max_memory / 1e6:.0f} MB)")
        return None

    def _idle_victim(self, slot: ModelSlot) -> ModelSlot | None:
        idle = [s for s in self.slots if s is not slot and s.state == "ready" and not s.users
                and not s.waiting and not (s.worker is not None and s.worker._pending)]
        return min(idle, key=lambda s: s.last_used, default=None)

    async def _make_room(self, slot: ModelSlot, loaded: bool = False) -> None:
        """Unload least recently used idle models until ``slot`` fits; wait for one to become
        idle up to ``wait_s``, then 503."""
        deadline = time.monotonic() + self.limits.wait_s
        while (shortage := self._shortage(slot, loaded)) is not None:
            victim = self._idle_victim(slot)
            if victim is not None:
                await self._unload(victim, f"least recently used, to make room for "
                                   f"'{slot.model_id}': {shortage}")
                continue
            if loaded:  # already in: the others go as they become idle
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                busy = ", ".join(repr(s.model_id) for s in self.slots
                                 if s is not slot and s.state in ("ready", "loading"))
                raise ServiceUnavailableError(
                    f"Model '{slot.model_id}' cannot be loaded: {shortage}, and none of them "
                    f"is idle ({busy}). Retry when a request has finished.",
                    retry_after=max(1, round(self.limits.wait_s / 4)), code="model_capacity")
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    # -- leases and unloading -----------------------------------------------------------------

    def _lease(self, slot: ModelSlot) -> None:
        """The current task uses ``slot`` until it ends."""
        task = asyncio.current_task()
        slot.last_used = time.monotonic()
        slot.idle_since = None
        if slot._timer is not None:
            slot._timer.cancel()
            slot._timer = None
        if task is None or task in slot.users:
            return
        slot.users.add(task)
        task.add_done_callback(lambda done: self._release(slot, done))

    def _release(self, slot: ModelSlot, task: asyncio.Task[Any]) -> None:
        slot.users.discard(task)
        slot.last_used = time.monotonic()
        if not slot.users:
            self._became_idle(slot)
            self._notify()

    def _became_idle(self, slot: ModelSlot) -> None:
        slot.idle_since = time.monotonic()
        if not self.unloading:
            return
        if slot._timer is not None:
            slot._timer.cancel()
            slot._timer = None
        expires = slot.expires_at()
        if expires is None:
            return
        delay = max(0.0, expires - time.monotonic())
        slot._timer = asyncio.get_running_loop().call_later(delay, self._expire, slot)

    def _expire(self, slot: ModelSlot) -> None:
        slot._timer = None
        expires = slot.expires_at()
        if expires is None or expires > time.monotonic() + 0.01:
            return
        if slot.worker is not None and slot.worker._pending:  # still finishing: look again
            slot._timer = asyncio.get_running_loop().call_later(0.5, self._expire, slot)
            return
        keep = slot.effective_keep_alive()
        why = ("asked to unload" if slot.unload_requested else
               "keep_alive 0: the request ended" if keep == 0 else f"idle for {keep:g} s")
        self._spawn(self._unload(slot, why))

    def _spawn(self, job: Any) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def unload(self, model_id: str) -> ModelSlot:
        """Unload now if idle; else as soon as the requests using it have finished."""
        slot = self._slot_named(model_id)
        if not self.unloading:
            raise BadRequestError(
                f"Model '{slot.model_id}' is a Ray Serve deployment, which Ray keeps running; "
                "scale it with the LABS_RAY_* settings.", param="model_id",
                code="unload_not_supported")
        if slot.state == "ready" and not slot.users and not slot.waiting:
            await self._unload(slot, "asked to unload")
        elif slot.state in ("ready", "loading"):
            slot.unload_requested = True  # the last request out unloads it
        elif slot.state == "failed":
            slot.error = None
            slot._loading = None
            self._set_state(slot, "unloaded", "asked to unload")
        return slot

    async def _unload(self, slot: ModelSlot, why: str) -> None:
        if slot.state != "ready" or slot.users:
            return
        worker, engine = slot.worker, slot.engine
        slot.worker, slot.engine, slot._loading = None, None, None
        slot.keep_alive_now = None
        slot.unload_requested = False
        slot.loaded_at = slot.idle_since = None
        if slot._timer is not None:
            slot._timer.cancel()
            slot._timer = None
        self._set_state(slot, "unloaded", why)
        if worker is not None:
            await worker.close()  # the process exits: its memory goes back to the system
        elif engine is not None and hasattr(engine, "close"):
            try:
                await asyncio.get_running_loop().run_in_executor(self._loader, engine.close)
            except Exception:  # unloading: report and go on
                log.exception("closing %s failed", slot.model_id)
        self._notify()

    # -- serving ------------------------------------------------------------------------------

    async def engine(self, kind: ModelKind, model_id: str | None = None,
                     keep_alive: float | None = None) -> Any:
        """The engine serving ``model_id`` (an id or an alias; the first model of ``kind``
        when None), loaded if it is not. The current task holds it until it ends.

        Raises 404 for a name that is not served as ``kind``, 503 while it is preloading or
        restarting or when there is no room for it, and 500 when it failed to load.
        """
        slot = self._slot_for(kind, model_id)
        if slot.state == "loading" and (slot._preloading or slot._loading is None):
            # Start-up preloading (as /ready says): 503 at once, so balancers look elsewhere.
            raise ServiceUnavailableError(
                f"Model '{slot.model_id}' is still loading; retry shortly.",
                retry_after=2,
                code="model_loading",
            )
        if slot.state == "restarting":
            raise ServiceUnavailableError(
                f"The engine of model '{slot.model_id}' is restarting ({slot.error}); "
                "retry shortly.", retry_after=2, code="engine_restarting")
        self._lease(slot)
        slot.keep_alive_now = keep_alive  # None: the entry's own (as Ollama, per request)
        if slot.state in ("waiting", "unloaded", "loading"):
            slot.waiting += 1
            try:
                await self._ensure_loaded(slot, "requested")
            finally:
                slot.waiting -= 1
        if slot.state == "failed":
            raise EngineError(f"Model '{slot.model_id}' failed to load: {slot.error}")
        if slot.state != "ready" or slot.engine is None:  # unloaded meanwhile: rare
            raise ServiceUnavailableError(f"Model '{slot.model_id}' is not loaded; retry.",
                                          retry_after=1, code="model_loading")
        slot.last_used = time.monotonic()
        if model_id is not None and model_id != slot.model_id:
            return NamedEngine(slot.engine, model_id)
        return slot.engine

    def _slot_named(self, model_id: str) -> ModelSlot:
        slot = self.find(model_id)
        if slot is None:
            served = ", ".join(repr(i) for i in self.ids())
            raise ModelNotFoundError(f"The model '{model_id}' is not served here. "
                                     f"Served: {served}.", param="model")
        return slot

    def _slot_for(self, kind: ModelKind, model_id: str | None) -> ModelSlot:
        candidates = [s for s in self.slots if s.kind == kind]
        if model_id is None:
            if candidates:
                return candidates[0]
            raise ModelNotFoundError(f"No {kind} model is configured on this server.",
                                     param="model")
        slot = self.find(model_id)
        if slot is not None and slot.kind == kind:
            return slot
        served = ", ".join(repr(n) for s in candidates for n in s.names()) or "none"
        raise ModelNotFoundError(
            f"The model '{model_id}' is not served as {'an' if kind[0] in 'aeiou' else 'a'} "
            f"{kind} model here. "
            f"Served {kind} models: {served}.",
            param="model",
        )

    # -- stopping -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop every engine: end the worker processes (each closes its engine), close the
        engines of this process."""
        for task in list(self._tasks):
            task.cancel()
        for slot in self.slots:
            if slot._timer is not None:
                slot._timer.cancel()
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
