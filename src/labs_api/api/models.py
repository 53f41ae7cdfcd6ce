"""GET /v1/models and GET /health."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from labs_api.errors import ModelNotFoundError
from labs_api.models import ModelRegistry

router = APIRouter()


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "labs"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


@router.get("/v1/models", response_model=ModelList, tags=["models"],
            summary="List served models")
async def list_models(request: Request) -> ModelList:
    registry: ModelRegistry = request.app.state.registry
    return ModelList(data=[ModelCard(id=s.model_id, created=s.created) for s in registry.slots])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, tags=["models"],
            summary="One served model")
async def retrieve_model(model_id: str, request: Request) -> ModelCard:
    registry: ModelRegistry = request.app.state.registry
    slot = registry.find(model_id)
    if slot is None:
        served = ", ".join(repr(i) for i in registry.ids())
        raise ModelNotFoundError(f"The model '{model_id}' is not served here. Served: {served}.",
                                 param="model")
    return ModelCard(id=slot.model_id, created=slot.created)


class ModelReadiness(BaseModel):
    id: str
    kind: str
    state: str
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
    summary="200 once every configured model is loaded, 503 before (or if one failed)",
    responses={503: {"model": Readiness}},
)
async def readiness(request: Request) -> JSONResponse:
    registry: ModelRegistry = request.app.state.registry
    models = [
        ModelReadiness(id=s.model_id, kind=s.kind, state=s.state, error=s.error,
                       load_seconds=s.load_seconds, restarts=s.restarts,
                       pid=s.worker.pid if s.worker is not None else None)
        for s in registry.slots
    ]
    failed = any(m.state == "failed" for m in models)
    status = "ready" if registry.all_ready() else ("failed" if failed else "loading")
    body = Readiness(status=status, models=models)
    return JSONResponse(body.model_dump(), status_code=200 if status == "ready" else 503)


@router.get("/health", response_model=Health, tags=["health"], summary="The process is up")
async def health() -> Health:
    return Health()
