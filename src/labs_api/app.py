"""create_app(settings) -> FastAPI: routers, error handlers and the model-loading lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from labs_api import __version__
from labs_api.api.anthropic.errors import AnthropicErrorMiddleware
from labs_api.api.anthropic.router import router as anthropic_router
from labs_api.api.anthropic.serving import MessagesService
from labs_api.api.chat.router import router as chat_router
from labs_api.api.chat.serving import ChatService
from labs_api.api.completions.router import router as completions_router
from labs_api.api.completions.serving import CompletionService
from labs_api.api.embeddings.router import router as embeddings_router
from labs_api.api.embeddings.serving import EmbeddingService
from labs_api.api.limits import RequestLimits
from labs_api.api.models import router as models_router
from labs_api.api.rerank.router import router as rerank_router
from labs_api.api.rerank.serving import RerankService
from labs_api.api.responses.router import router as responses_router
from labs_api.api.responses.serving import ResponsesService
from labs_api.api.speech.router import router as speech_router
from labs_api.api.speech.serving import SpeechService
from labs_api.api.speech.voices import router as voices_router
from labs_api.api.tokens.router import router as tokens_router
from labs_api.api.tokens.serving import TokenService
from labs_api.api.transcription.router import router as transcription_router
from labs_api.api.transcription.serving import TranscriptionService
from labs_api.catalog import build_registry, worker_options
from labs_api.errors import install_error_handlers
from labs_api.models import ModelRegistry
from labs_api.ops.install import install_operations
from labs_api.settings import Settings
from labs_api.ui.routes import install_ui

log = logging.getLogger("labs_api")


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    """The application. ``registry`` replaces the configured models (tests pass fake engines)."""
    settings = settings or Settings()
    registry = registry or build_registry(settings, worker_options(settings))
    registry.preload_default = settings.preload_on_start

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = None
        if any(registry.preloads(slot) for slot in registry.slots):
            # Load in the background: the port opens at once, requests get 503 until ready.
            loading = asyncio.create_task(registry.load_all())
        try:
            yield
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
            await registry.aclose()
            app.state.responses_service.close()

    app = FastAPI(
        title="AI Labs API",
        version=__version__,
        description="OpenAI-compatible chat, embeddings, similarities, text-to-speech and "
        "speech-to-text.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from labs_api.api.docs, without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.limits = RequestLimits.from_settings(settings)
    app.state.chat_service = ChatService(registry, settings)
    app.state.completion_service = CompletionService(registry, settings)
    app.state.responses_service = ResponsesService(app.state.chat_service, settings)
    app.state.responses_keys_on = bool(settings.api_keys())
    app.state.embedding_service = EmbeddingService(registry)
    app.state.speech_service = SpeechService(registry, settings)
    app.state.transcription_service = TranscriptionService(registry, settings)
    app.state.token_service = TokenService(registry)
    app.state.rerank_service = RerankService(registry)
    app.state.messages_service = MessagesService(registry, app.state.chat_service)
    install_error_handlers(app)
    app.include_router(models_router)
    app.include_router(chat_router)
    app.include_router(completions_router)
    app.include_router(responses_router)
    app.include_router(embeddings_router)
    app.include_router(speech_router)
    app.include_router(voices_router)
    app.include_router(transcription_router)
    app.include_router(tokens_router)
    app.include_router(rerank_router)
    app.include_router(anthropic_router)
    # Keys, rate limit, CORS, body size, request ids and access log, /metrics, offline /docs.
    install_operations(app, settings)
    app.add_middleware(AnthropicErrorMiddleware)  # outermost: every error of /v1/messages
    if settings.ui:
        install_ui(app)  # the web playground at / (the API keeps every path it had)
    return app
