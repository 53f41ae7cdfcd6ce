"""The HTTP face of reranking."""

from __future__ import annotations

from fastapi import APIRouter, Request

from labs_api.api.disconnect import unless_disconnected
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.rerank.protocol import (
    DocumentOut,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    TEIRank,
    TEIRerankRequest,
)
from labs_api.api.rerank.serving import RerankService, new_rerank_id
from labs_api.api.routing import StrictJSONRoute

router = APIRouter(tags=["rerank"], route_class=StrictJSONRoute)


async def _rerank(body: RerankRequest, service: RerankService) -> RerankResponse:
    texts = body.texts()
    ranked = await service.rank(body.model, body.query, texts)
    order = ranked.order[:body.top_n] if body.top_n else ranked.order
    results = [RerankResult(index=i, relevance_score=ranked.scores[i],
                            document=DocumentOut(text=texts[i]) if body.return_documents
                            else None) for i in order]
    return RerankResponse(id=new_rerank_id(), model=ranked.model, results=results,
                          usage=RerankUsage(prompt_tokens=ranked.tokens,
                                            total_tokens=ranked.tokens))


@router.post("/v1/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES,
             response_model_exclude_none=True,
             summary="Rerank documents against a query (Cohere's and Jina's shape)")
async def rerank_v1(body: RerankRequest, request: Request):
    return await unless_disconnected(request, _rerank(body, request.app.state.rerank_service))


@router.post("/v2/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES,
             response_model_exclude_none=True,
             summary="Rerank documents against a query (Cohere's v2 path)")
async def rerank_v2(body: RerankRequest, request: Request):
    return await unless_disconnected(request, _rerank(body, request.app.state.rerank_service))


async def _tei(body: TEIRerankRequest, service: RerankService) -> list[TEIRank]:
    ranked = await service.rank(body.model, body.query, body.texts, raw=body.raw_scores)
    return [TEIRank(index=i, score=ranked.scores[i],
                    text=body.texts[i] if body.return_text else None) for i in ranked.order]


@router.post("/rerank", response_model=list[TEIRank], responses=ERROR_RESPONSES,
             response_model_exclude_none=True,
             summary="Rerank texts against a query (Text Embeddings Inference's shape)")
async def rerank_tei(body: TEIRerankRequest, request: Request):
    return await unless_disconnected(request, _tei(body, request.app.state.rerank_service))
