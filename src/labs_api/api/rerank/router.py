"""The HTTP face of reranking."""

from __future__ import annotations

from fastapi import APIRouter, Request

from labs_api.api.disconnect import unless_disconnected
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.rerank.protocol import (
    RerankRequest,
    RerankResponse,
    TEIRank,
    TEIRerankRequest,
)
from labs_api.api.rerank.serving import RerankService
from labs_api.api.routing import StrictJSONRoute

router = APIRouter(tags=["rerank"], route_class=StrictJSONRoute)


@router.post("/v1/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES,
             response_model_exclude_none=True,
             summary="Rerank documents against a query (Cohere's and Jina's shape)")
async def rerank_v1(body: RerankRequest, request: Request):
    service: RerankService = request.app.state.rerank_service
    return await unless_disconnected(request, service.rerank(body))


@router.post("/v2/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES,
             response_model_exclude_none=True,
             summary="Rerank documents against a query (Cohere's v2 path)")
async def rerank_v2(body: RerankRequest, request: Request):
    service: RerankService = request.app.state.rerank_service
    return await unless_disconnected(request, service.rerank(body))


@router.post("/rerank", response_model=list[TEIRank], responses=ERROR_RESPONSES,
             response_model_exclude_none=True,
             summary="Rerank texts against a query (Text Embeddings Inference's shape)")
async def rerank_tei(body: TEIRerankRequest, request: Request):
    service: RerankService = request.app.state.rerank_service
    return await unless_disconnected(request, service.tei(body))
