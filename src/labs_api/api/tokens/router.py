"""The HTTP face of /tokenize and /detokenize."""

from __future__ import annotations

from fastapi import APIRouter, Request

from labs_api.api.disconnect import unless_disconnected
from labs_api.api.errors_doc import ERROR_RESPONSES
from labs_api.api.routing import StrictJSONRoute
from labs_api.api.tokens.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from labs_api.api.tokens.serving import TokenService

router = APIRouter(tags=["tokens"], route_class=StrictJSONRoute)


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES,
             summary="Tokens of text or of a conversation (llama-server's and vLLM's shapes)")
async def tokenize(body: TokenizeRequest, request: Request):
    service: TokenService = request.app.state.token_service
    return await unless_disconnected(request, service.tokenize(body))


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERROR_RESPONSES,
             summary="Text of token ids (llama-server's and vLLM's shapes)")
async def detokenize(body: DetokenizeRequest, request: Request):
    service: TokenService = request.app.state.token_service
    return await unless_disconnected(request, service.detokenize(body))
