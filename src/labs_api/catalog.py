"""Building the registry of served models from the settings."""

from __future__ import annotations

from labs_api.engines.chat.factory import chat_slot
from labs_api.engines.embedding.factory import embedding_slot
from labs_api.engines.speech.factory import speech_slot
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings


def build_registry(settings: Settings) -> ModelRegistry:
    """One slot per configured model: chat, then embeddings, then speech."""
    slots: list[ModelSlot] = [chat_slot(settings)]
    slots.append(embedding_slot(settings))
    slots.append(speech_slot(settings))
    return ModelRegistry(slots)
