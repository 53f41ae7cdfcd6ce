"""Tokenizing and detokenizing with a chat model's own tokenizer."""

from __future__ import annotations

import asyncio
import inspect

from labs_api.api.tokens.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    pieces_of,
)
from labs_api.engines.chat.base import ChatEngine
from labs_api.errors import BadRequestError, UnsupportedParameterError
from labs_api.models import ModelRegistry


class TokenService:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        engine: ChatEngine = await self.registry.engine("chat", request.model)
        if request.messages is not None:
            tokens = await engine.prompt_tokens(request.engine_messages())
        else:
            tokens = await engine.content_tokens(request.text(),
                                                 request.add_special_for_text())
        listed: list = tokens
        if request.with_pieces:
            listed = pieces_of(tokens, await engine.pieces(tokens))
        return TokenizeResponse(tokens=listed, count=len(tokens),
                                max_model_len=engine.context_length, model=engine.model_id)

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        engine: ChatEngine = await self.registry.engine("chat", request.model)
        check_vocabulary(engine, request.tokens)
        detokenize = getattr(engine, "detokenize", None)
        if detokenize is None:
            raise UnsupportedParameterError(
                f"the '{engine.model_id}' engine cannot turn tokens into text", param="tokens")
        if inspect.iscoroutinefunction(detokenize):
            text = await detokenize(request.tokens)
        else:
            text = await asyncio.to_thread(detokenize, request.tokens)
        return DetokenizeResponse(content=text, prompt=text, model=engine.model_id)


def check_vocabulary(engine: ChatEngine, tokens: list[int]) -> None:
    """Every id must be a token of the model (llama.cpp reads out of bounds on others)."""
    vocab = getattr(engine, "vocab_size", None)
    wrong = [t for t in tokens if t < 0 or (vocab is not None and t >= vocab)]
    if wrong:
        known = f" (0..{vocab - 1})" if vocab is not None else ""
        raise BadRequestError(f"tokens holds ids that are not in this model's "
                              f"vocabulary{known}: {wrong[:5]}", param="tokens")
