"""The HTTP face of embeddings and similarities: parse, call the service, return JSON."""

from __future__ import annotations

from fastapi import APIRouter, Request

from labs_api.api.disconnect import unless_disconnected
from labs_api.api.embeddings.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    SimilarityRequest,
    SimilarityResponse,
)
from labs_api.api.embeddings.serving import EmbeddingService
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.routing import StrictJSONRoute

router = APIRouter(tags=["embeddings"], route_class=StrictJSONRoute)

RESPONSES = {
    **ERROR_RESPONSES,
    400: {**ERROR_RESPONSES[400],
          "description": "Malformed JSON, an input too long, or dimensions too large"},
    503: {**ERROR_RESPONSES[503],
          "description": "Model loading, or the embedding queue is full (Retry-After)"},
}


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingResponse,
    responses=RESPONSES,
    summary="Text embeddings (OpenAI-compatible; float or base64, optional dimensions)",
)
async def create_embeddings(body: EmbeddingRequest, request: Request):
    service: EmbeddingService = request.app.state.embedding_service
    return await unless_disconnected(request, service.embeddings(body))


@router.post(
    "/v1/similarities",
    response_model=SimilarityResponse,
    responses=RESPONSES,
    summary="N×N cosine similarities of sentences (extension)",
)
async def create_similarities(body: SimilarityRequest, request: Request):
    service: EmbeddingService = request.app.state.embedding_service
    return await unless_disconnected(request, service.similarities(body))
