"""Request and response schemas of ``POST /tokenize`` and ``POST /detokenize``.

Both llama-server's and vLLM's shapes are accepted: text as ``content`` (llama-server) or
``prompt`` (vLLM), or a conversation as ``messages`` (tokenized as chat completions tokenize it,
through the model's chat template with the assistant's turn opened); ``add_special``
(llama-server, default false) or ``add_special_tokens`` (vLLM, default true for ``prompt``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labs_api.api.chat.protocol import ChatMessageIn
from labs_api.api.request_model import RequestModel
from labs_api.engines.chat.base import ChatMessage


class TokenizeRequest(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"content": "Hello world", "with_pieces": True}]},
    )

    model: str | None = Field(None, min_length=1,
                              description="Chat model id (default: the served chat model)")
    content: str | None = Field(None, description="Text to tokenize (llama-server's name)")
    prompt: str | None = Field(None, description="Text to tokenize (vLLM's name)")
    messages: list[ChatMessageIn] | None = Field(
        None, min_length=1, description="A conversation, tokenized through the chat template")
    add_special: bool | None = Field(
        None, description="Add the model's BOS token to text (default false)")
    add_special_tokens: bool | None = Field(
        None, description="vLLM's name of add_special (default true with prompt)")
    with_pieces: bool = Field(False, description="Each token as {id, piece}")

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        given = [name for name in ("content", "prompt", "messages")
                 if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("send exactly one of content, prompt or messages"
                             + (f" (got {', '.join(given)})" if given else ""))
        if (self.add_special is not None and self.add_special_tokens is not None
                and self.add_special != self.add_special_tokens):
            raise ValueError("add_special and add_special_tokens disagree")
        if self.messages is not None and self.special_asked():
            raise ValueError("add_special applies to content and prompt; messages are "
                             "tokenized as chat completions tokenize them (the chat template "
                             "places any special tokens)")
        return self

    def special_asked(self) -> bool:
        return bool(self.add_special or self.add_special_tokens)

    def add_special_for_text(self) -> bool:
        """As each server defaults: llama-server's ``content`` without BOS, vLLM's ``prompt``
        with it."""
        for value in (self.add_special, self.add_special_tokens):
            if value is not None:
                return value
        return self.prompt is not None

    def text(self) -> str:
        return self.content if self.content is not None else (self.prompt or "")

    def engine_messages(self) -> list[ChatMessage]:
        return [m.to_engine() for m in self.messages or []]


class TokenPiece(BaseModel):
    id: int
    piece: str | list[int] = Field(
        description="The token's text; its bytes when they are not valid UTF-8 on their own")


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[TokenPiece]
    count: int
    max_model_len: int = Field(description="Context of the model, in tokens")
    model: str


class DetokenizeRequest(RequestModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"tokens": [19556, 905]}]})

    model: str | None = Field(None, min_length=1,
                              description="Chat model id (default: the served chat model)")
    tokens: list[int] = Field(description="Token ids of the model's vocabulary")


class DetokenizeResponse(BaseModel):
    content: str = Field(description="The text (llama-server's name); special tokens left out")
    prompt: str = Field(description="The same text (vLLM's name)")
    model: str


def piece_value(piece: bytes) -> str | list[int]:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


def pieces_of(tokens: list[int], pieces: list[bytes]) -> list[dict[str, Any]]:
    return [{"id": t, "piece": piece_value(p)} for t, p in zip(tokens, pieces, strict=True)]
