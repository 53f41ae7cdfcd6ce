"""Answering Messages requests on the chat path (``ChatService``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from labs_api.api.anthropic.protocol import (
    CountTokensRequest,
    CountTokensResponse,
    MessageResponse,
    MessagesRequest,
)
from labs_api.api.anthropic.streaming import message_events
from labs_api.api.anthropic.translate import new_message_id, to_chat_request, to_message
from labs_api.api.chat.serving import ChatService
from labs_api.engines.chat.base import ChatEngine
from labs_api.models import ModelRegistry


class MessagesService:
    def __init__(self, registry: ModelRegistry, chat: ChatService) -> None:
        self.registry = registry
        self.chat = chat

    async def create(self, request: MessagesRequest) -> MessageResponse:
        return to_message(await self.chat.complete(to_chat_request(request)))

    async def open_events(self, request: MessagesRequest) -> AsyncIterator[dict[str, Any]]:
        """Start the generation (errors raise here, before any byte is sent), then hand back
        Anthropic's events for it."""
        chat_request = to_chat_request(request, stream=True)
        prompt_tokens = await self._count(chat_request)
        opened = await self.chat.open(chat_request)
        chunks = self.chat.stream_events(chat_request, opened)
        return message_events(chunks, message_id=new_message_id(),
                              model=opened.engine.model_id, prompt_tokens=prompt_tokens)

    async def count_tokens(self, request: CountTokensRequest) -> CountTokensResponse:
        return CountTokensResponse(input_tokens=await self._count(to_chat_request(request)))

    async def _count(self, chat_request: Any) -> int:
        engine: ChatEngine = await self.registry.engine("chat", chat_request.model)
        return len(await engine.prompt_tokens(chat_request.engine_messages()))
