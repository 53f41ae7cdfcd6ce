"""Responses on the chat path: translate, generate through ``ChatService``, shape the output,
store it. Streaming events are in ``labs_api.api.responses.events``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from labs_api.api.chat.protocol import ChatCompletionRequest
from labs_api.api.chat.serving import ChatService
from labs_api.api.chat.tools import ToolSpec, parse_call
from labs_api.api.choices import OpenedChoices, collect
from labs_api.api.limits import LimitExceededError
from labs_api.api.responses import objects
from labs_api.api.responses.events import response_events
from labs_api.api.responses.protocol import CreateResponseRequest, InputItem
from labs_api.api.responses.store import ResponseStore, StoredResponse
from labs_api.api.responses.translate import Item, chat_request
from labs_api.engines import errors as engine_errors
from labs_api.errors import APIError, ContextLengthError
from labs_api.settings import Settings

_ITEMS = TypeAdapter(list[InputItem])


class ResponseNotFoundError(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


def default_data_dir() -> Path:
    """The user's data directory: ``$XDG_DATA_HOME/labs-api`` or ``~/.local/share/labs-api``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "labs-api"


@dataclass
class Prepared:
    """A request ready to generate: its chat form and the conversation it continues."""

    request: CreateResponseRequest
    chat: ChatCompletionRequest
    items: list[dict[str, Any]]  # this request's input items, with ids (what input_items lists)
    history: list[dict[str, Any]]  # the previous responses' conversation
    owner: str

    def tools(self) -> list[ToolSpec]:
        return self.chat.tool_specs() if self.chat.tool_mode() != "none" else []


class ResponsesService:
    def __init__(self, chat: ChatService, settings: Settings) -> None:
        self.chat = chat
        self.settings = settings
        self._store: ResponseStore | None = None
        self._opening = asyncio.Lock()

    # -- the store -------------------------------------------------------------------------

    async def store(self) -> ResponseStore:
        """Opened on first use, so a server nobody asks for responses creates no file."""
        async with self._opening:
            if self._store is None:
                location = self.settings.data_dir or str(default_data_dir())
                self._store = await asyncio.to_thread(
                    ResponseStore, location, self.settings.responses_ttl,
                    self.settings.responses_max_stored, self.settings.responses_max_bytes)
            return self._store

    async def retrieve(self, owner: str, response_id: str) -> StoredResponse:
        found = await asyncio.to_thread((await self.store()).get, owner, response_id)
        if found is None:
            raise ResponseNotFoundError(f"No response with id '{response_id[:128]}' found.",
                                        param="response_id")
        return found

    async def delete(self, owner: str, response_id: str) -> dict[str, Any]:
        if not await asyncio.to_thread((await self.store()).delete, owner, response_id):
            raise ResponseNotFoundError(f"No response with id '{response_id[:128]}' found.",
                                        param="response_id")
        return {"id": response_id, "object": "response", "deleted": True}

    def close(self) -> None:
        """At shutdown; a later request (an app served again) opens the store anew."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    # -- generating ------------------------------------------------------------------------

    async def prepare(self, request: CreateResponseRequest, owner: str) -> Prepared:
        history: list[dict[str, Any]] = []
        if request.previous_response_id is not None:
            try:
                previous = await self.retrieve(owner, request.previous_response_id)
            except ResponseNotFoundError:
                raise ResponseNotFoundError(
                    f"Previous response with id '{request.previous_response_id}' not found.",
                    param="previous_response_id") from None
            history = previous.conversation
        items = [stored_item(item) for item in request.input_items()]
        self._check_size(history, items)
        try:
            earlier = _ITEMS.validate_python(history)
        except ValidationError:
            earlier = []  # an older version's rows; the new input still stands
        chat = chat_request(request, [*earlier, *request.input_items()],
                            self.settings.responses_max_output_tokens)
        return Prepared(request, chat, items, history, owner)

    def _check_size(self, history: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
        """The conversation a chain of responses builds up is bounded like one request."""
        count = len(history) + len(items)
        if count > self.settings.max_messages:
            raise LimitExceededError(
                f"input: the conversation holds {count} items with the previous responses'; "
                f"at most {self.settings.max_messages} (LABS_MAX_MESSAGES).", param="input")
        chars = sum(_item_chars(item) for item in [*history, *items])
        if chars > self.settings.max_prompt_chars:
            raise LimitExceededError(
                f"input: the conversation holds {chars} characters with the previous "
                f"responses'; at most {self.settings.max_prompt_chars} "
                "(LABS_MAX_PROMPT_CHARS).", param="input")

    async def open(self, prepared: Prepared) -> OpenedChoices:
        """Start the generation (errors raise here, before any byte is sent)."""
        try:
            return await self.chat.open(prepared.chat)
        except (engine_errors.PromptTooLong, ContextLengthError) as exc:
            message = getattr(exc, "message", str(exc))
            raise ContextLengthError(message, param="input") from None

    async def create(self, request: CreateResponseRequest, owner: str) -> dict[str, Any]:
        prepared = await self.prepare(request, owner)
        opened = await self.open(prepared)
        response = objects.ResponseObject(request, opened.engine.model_id)
        choice = (await collect(opened))[0]
        call = parse_call(choice.text, prepared.tools()) if prepared.tools() else None
        if call is not None:
            response.output.append(objects.function_call_item(
                objects.new_id("fc"), call.id, call.name, call.arguments, "completed"))
        else:
            status = "incomplete" if choice.finish_reason == "length" else "completed"
            response.output.append(objects.message_item(objects.new_id("msg"), choice.text,
                                                         status))
        cut = call is None and choice.finish_reason == "length"
        response.finish("incomplete" if cut else "completed",
                        objects.usage(choice.prompt_tokens, choice.completion_tokens,
                                      choice.cached_tokens),
                        "max_output_tokens" if cut else None)
        body = response.as_dict()
        await self.save(prepared, body)
        return body

    async def save(self, prepared: Prepared, body: dict[str, Any]) -> None:
        if not prepared.request.store:
            return
        conversation = [*prepared.history, *prepared.items, *body["output"]]
        record = StoredResponse(body["id"], body, prepared.items, conversation)
        await asyncio.to_thread((await self.store()).put, prepared.owner, record)

    def open_events(self, prepared: Prepared, opened: OpenedChoices,
                    ) -> AsyncIterator[dict[str, Any]]:
        return response_events(self, prepared, opened)


def stored_item(item: Item) -> dict[str, Any]:
    """An input item as OpenAI lists it (an id, a status, content as parts)."""
    data = item.model_dump(exclude_none=True)
    if data["type"] == "message":
        prefix = "msg"
        if isinstance(data["content"], str):
            kind = "output_text" if data["role"] == "assistant" else "input_text"
            data["content"] = [{"type": kind, "text": data["content"]}]
        for part in data["content"]:
            if part["type"] == "output_text":
                part.setdefault("annotations", [])
    else:
        prefix = "fc" if data["type"] == "function_call" else "fco"
    data.setdefault("id", objects.new_id(prefix))
    data.setdefault("status", "completed")
    return data


def _item_chars(item: dict[str, Any]) -> int:
    """Characters of text the model is given for a stored item."""
    total = 0
    for key in ("arguments", "name"):
        value = item.get(key)
        if isinstance(value, str):
            total += len(value)
    for key in ("content", "output"):
        value = item.get(key)
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(part.get("text") or part.get("refusal") or "")
                         for part in value if isinstance(part, dict))
    return total
