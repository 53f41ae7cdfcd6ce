"""GET /v1/models (with each model's metadata), the models' status and their load/unload
endpoints, /ready and /health."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from labs_api.models import PUBLIC_STATE, ModelRegistry, ModelSlot

router = APIRouter()

PublicState = Literal["unloaded", "loading", "loaded", "failed"]


class ModelCard(BaseModel):
    """OpenAI's Model (``id``, ``object``, ``created``, ``owned_by``) and what ours add."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "labs"
    kind: str | None = Field(None, description="chat, embedding, speech or transcription")
    context_length: int | None = Field(
        None, description="Tokens a prompt and its reply may hold (chat: per request); "
        "null until the model has loaded when only the model knows")
    capabilities: list[str] = Field(default_factory=list)
    status: PublicState | None = None
    aliases: list[str] | None = Field(None, description="Other names it answers to")
    alias_of: str | None = Field(None, description="For an alias: the id it stands for")
    dimensions: int | None = Field(None, description="Embedding vector size (once loaded)")
    voices: list[str] | None = Field(None, description="Speech voices (once loaded)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


def model_card(slot: ModelSlot, name: str | None = None) -> ModelCard:
    """The card of ``slot``, or of its alias ``name``."""
    engine = slot.engine
    context = getattr(engine, "context_length", None)
    if slot.kind == "embedding":
        context = getattr(engine, "max_input_tokens", None)
    capabilities = list(slot.capabilities)
    if slot.kind == "transcription" and getattr(engine, "multilingual", False) \
            and "translation" not in capabilities:
        capabilities.append("translation")
    voices = getattr(engine, "voices", None) if slot.kind == "speech" else None
    alias = name is not None and name != slot.model_id
    return ModelCard(
        id=name or slot.model_id, created=slot.created, kind=slot.kind,
        context_length=context if isinstance(context, int) else slot.context_length,
        capabilities=capabilities, status=PUBLIC_STATE[slot.state],  # type: ignore[arg-type]
        aliases=None if alias else list(slot.aliases),
        alias_of=slot.model_id if alias else None,
        dimensions=getattr(engine, "dimensions", None) if slot.kind == "embedding" else None,
        voices=list(voices) if voices else None)


@router.get("/v1/models", response_model=ModelList, response_model_exclude_none=True,
            tags=["models"], summary="List served models (aliases too)")
async def list_models(request: Request) -> ModelList:
    registry: ModelRegistry = request.app.state.registry
    return ModelList(data=[model_card(s, name) for s in registry.slots for name in s.names()])


class ModelStatus(BaseModel):
    id: str
    kind: str
    state: PublicState
    detail: str = Field(description="The registry's own state: waiting (never loaded), "
                        "loading, ready, restarting, failed or unloaded")
    aliases: list[str]
    preload: bool
    memory_bytes: int | None = Field(None, description="Resident memory of its worker "
                                     "process now (when unloaded: what it took last time)")
    loaded_since: int | None = Field(None, description="Unix time it finished loading")
    expires_at: int | None = Field(None, description="Unix time it unloads if still idle; "
                                   "null: not scheduled (in use, kept for ever, unloaded)")
    keep_alive: float = Field(description="Idle seconds before unloading (-1: never)")
    requests_running: int
    requests_waiting: int = Field(description="Waiting for it to load, or (chat) in its "
                                  "engine's queue")
    last_used: int | None = Field(None, description="Unix time a request last used it")
    load_seconds: float | None = None
    pid: int | None = None
    restarts: int = 0
    error: str | None = None


class StatusView(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelStatus]
    loaded_models: int
    max_loaded_models: int | None = Field(description="LABS_MAX_LOADED_MODELS (null: none)")
    memory_bytes: int = Field(description="What the loaded models' workers hold")
    max_model_memory: int | None = Field(description="LABS_MAX_MODEL_MEMORY (null: none)")


def _wall(monotonic: float | None) -> int | None:
    return None if monotonic is None else int(time.time() + monotonic - time.monotonic())


def model_status(registry: ModelRegistry, slot: ModelSlot) -> ModelStatus:
    queued = 0
    stats = getattr(slot.engine, "queue_stats", None)
    if slot.kind == "chat" and stats is not None:
        try:
            counts = stats()
        except Exception:  # the scheduler changed its lists under us: skip
            counts = None
        queued = counts[1] if counts else 0
    return ModelStatus(
        id=slot.model_id, kind=slot.kind, state=PUBLIC_STATE[slot.state],  # type: ignore[arg-type]
        detail=slot.state, aliases=list(slot.aliases), preload=registry.preloads(slot),
        memory_bytes=registry.memory(slot),
        loaded_since=int(slot.loaded_at) if slot.loaded_at and slot.state == "ready" else None,
        expires_at=_wall(slot.expires_at()) if registry.unloading else None,
        keep_alive=slot.effective_keep_alive() if registry.unloading else -1,
        requests_running=max(0, len(slot.users) - slot.waiting),
        requests_waiting=slot.waiting + queued,
        last_used=_wall(slot.last_used) if slot.last_used else None,
        load_seconds=slot.load_seconds, restarts=slot.restarts, error=slot.error,
        pid=slot.worker.pid if slot.worker is not None else None)


@router.get("/v1/status", response_model=StatusView, tags=["models"],
            summary="Every model's state, memory, expiry and requests (as Ollama's /api/ps)")
async def status(request: Request) -> StatusView:
    registry: ModelRegistry = request.app.state.registry
    rows = [model_status(registry, s) for s in registry.slots]
    limits = registry.limits
    return StatusView(
        data=rows, loaded_models=sum(1 for r in rows if r.state == "loaded"),
        max_loaded_models=limits.max_loaded or None,
        memory_bytes=sum(r.memory_bytes or 0 for r in rows if r.state == "loaded"),
        max_model_memory=limits.max_memory or None)


@router.post("/v1/models/{model_id:path}/load", response_model=ModelStatus, tags=["models"],
             summary="Load a model now (waits until it is loaded)")
async def load_model(model_id: str, request: Request) -> ModelStatus:
    registry: ModelRegistry = request.app.state.registry
    slot = await registry.load(model_id)
    if slot.state == "failed":
        from labs_api.errors import EngineError

        raise EngineError(f"Model '{slot.model_id}' failed to load: {slot.error}")
    return model_status(registry, slot)


@router.post("/v1/models/{model_id:path}/unload", response_model=ModelStatus,
             tags=["models"], summary="Unload a model (once the requests using it finish)")
async def unload_model(model_id: str, request: Request) -> ModelStatus:
    registry: ModelRegistry = request.app.state.registry
    return model_status(registry, await registry.unload(model_id))


@router.get("/v1/models/{model_id:path}", response_model=ModelCard,
            response_model_exclude_none=True, tags=["models"], summary="One served model")
async def retrieve_model(model_id: str, request: Request) -> ModelCard:
    registry: ModelRegistry = request.app.state.registry
    slot = registry._slot_named(model_id)
    return model_card(slot, model_id)


class ModelReadiness(BaseModel):
    id: str
    kind: str
    state: str
    preload: bool = True  # only preloaded models decide readiness
    error: str | None = None
    load_seconds: float | None = None
    pid: int | None = None  # the engine worker's process, when the engine runs in one
    restarts: int = 0  # times the engine worker was started again after a crash or stall


class Readiness(BaseModel):
    status: Literal["ready", "loading", "failed"]
    models: list[ModelReadiness]


@router.get(
    "/ready",
    response_model=Readiness,
    tags=["health"],
    summary="200 once every preloaded model is loaded, 503 before (or if one failed)",
    responses={503: {"model": Readiness}},
)
async def readiness(request: Request) -> JSONResponse:
    registry: ModelRegistry = request.app.state.registry
    models = [
        ModelReadiness(id=s.model_id, kind=s.kind, state=s.state, error=s.error,
                       preload=registry.preloads(s), load_seconds=s.load_seconds,
                       restarts=s.restarts, pid=s.worker.pid if s.worker is not None else None)
        for s in registry.slots
    ]
    failed = any(m.state == "failed" and m.preload for m in models)
    status = "ready" if registry.all_ready() else ("failed" if failed else "loading")
    body: dict[str, Any] = Readiness(status=status, models=models).model_dump()
    return JSONResponse(body, status_code=200 if status == "ready" else 503)


@router.get("/health", response_model=Health, tags=["health"], summary="The process is up")
async def health() -> Health:
    return Health()
