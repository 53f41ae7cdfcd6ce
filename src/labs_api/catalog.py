"""Building the registry of served models from the settings."""

from __future__ import annotations

from labs_api.engines.chat.factory import chat_slot
from labs_api.engines.embedding.factory import embedding_slot
from labs_api.engines.rerank.factory import rerank_slot
from labs_api.engines.speech.factory import speech_slot
from labs_api.engines.transcription.factory import transcription_slot
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings
from labs_api.workers.supervisor import WorkerOptions


def build_registry(settings: Settings, workers: WorkerOptions | None = None) -> ModelRegistry:
    """One slot per configured model: chat, then embeddings, speech and
    transcription; each engine in a
    worker process of its own when ``workers`` is given."""
    slots: list[ModelSlot] = [chat_slot(settings)]
    slots.append(embedding_slot(settings))
    slots.append(speech_slot(settings))
    slots.append(transcription_slot(settings))
    if settings.rerank_model:
        slots.append(rerank_slot(settings))
    return ModelRegistry(slots, workers)


def worker_options(settings: Settings) -> WorkerOptions | None:
    """How engine workers are supervised; None when engines run in the server process."""
    if not settings.engine_workers:
        return None
    return WorkerOptions(stall_seconds=settings.engine_stall_seconds,
                         log_level=settings.log_level)
