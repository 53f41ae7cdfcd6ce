"""Engines that run elsewhere: stand-ins that look like the engine to the HTTP layer.

The engine itself runs in another process (an engine worker, ``labs_api.workers``, or a Ray
Serve replica, ``labs_api.ray_serve``) behind an :class:`EngineHost` there. Here a proxy has the
engine's public attributes (copied from the other side) and forwards each call through a
:class:`Transport`. Streams arrive chunk by chunk; closing one early cancels the work on the
other side. Errors come back as the engine's own exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import numpy as np

from labs_api.engines.chat.base import ChatEngine, ChatMessage, GenerationChunk, SamplingParams
from labs_api.engines.speech.sentences import split_sentences

#: What a chat stream starts from: ("messages", [ChatMessage]), ("text", str) or
#: ("tokens", [int]); the host tokenizes, so this side needs no tokenizer. ("group",
#: [([int], SamplingParams)]) is a request's generations together (params then unused).
#: ``tokenize`` alone also takes ("content", (str, add_special)), for /tokenize.
PromptSource = tuple[str, Any]


class Transport(Protocol):
    """How a proxy reaches its engine's host."""

    async def call(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the host and return its result."""

    def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """Iterate what ``method`` on the host yields. Closing early cancels it there."""


class RemoteEngine:
    """A proxy: the host engine's attributes, and the transport to reach it."""

    what = "model"

    def __init__(self, transport: Transport, attributes: dict[str, Any]) -> None:
        self._transport = transport
        self.update(attributes)

    def update(self, attributes: dict[str, Any]) -> None:
        """Take the engine's attributes (again, after its host restarted)."""
        self.__dict__.update(attributes)

    def close(self) -> None:
        """The model lives with its host; nothing to release here."""


class RemoteChatEngine(RemoteEngine, ChatEngine):
    what = "chat"

    async def prompt_tokens(self, messages: list[ChatMessage]) -> list[int]:
        return await self._transport.call("tokenize", ("messages", list(messages)))

    async def text_tokens(self, text: str) -> list[int]:
        return await self._transport.call("tokenize", ("text", text))

    async def detokenize(self, tokens: list[int]) -> str:
        return await self._transport.call("detokenize", list(tokens))

    async def content_tokens(self, text: str, add_special: bool) -> list[int]:
        return await self._transport.call("tokenize", ("content", (text, add_special)))

    async def pieces(self, tokens: list[int]) -> list[bytes]:
        return await self._transport.call("pieces", list(tokens))

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        raise NotImplementedError("the tokenizer is with the engine's host: await prompt_tokens")

    def tokenize_text(self, text: str) -> list[int]:
        raise NotImplementedError("the tokenizer is with the engine's host: await text_tokens")

    def stream(self, messages: list[ChatMessage],
               params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        return self._transport.stream("stream", ("messages", list(messages)), params)

    def stream_prompt(self, prompt: list[int],
                      params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        """Checked (context, supported fields) by the host's engine when the stream starts."""
        return self._transport.stream("stream", ("tokens", list(prompt)), params)

    def stream_tokens(self, prompt: list[int],
                      params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        return self.stream_prompt(prompt, params)

    def stream_group(self, items: list[tuple[list[int], SamplingParams]],
                     ) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """One stream for all the generations of a request (the host admits, cancels and
        fails them together); closing it cancels every one of them there."""
        group = [(list(prompt), params) for prompt, params in items]
        return self._transport.stream("stream", ("group", group), None)

    def queue_stats(self) -> tuple[int, int] | None:
        stats = getattr(self._transport, "queue_stats", None)
        return stats() if stats is not None else None


class RemoteEmbeddingBatcher(RemoteEngine):
    """Stands for the host's ``EmbeddingBatcher``: each call is batched there with the other
    calls that host receives."""

    what = "embedding"

    async def embed(self, texts: Any, task: str) -> Any:
        return await self._transport.call("embed", list(texts), task)


class RemoteSpeechEngine(RemoteEngine):
    what = "speech"
    voices: tuple[str, ...]
    voice_languages: dict[str, str]
    max_sentence_chars: int

    @property
    def default_voice(self) -> str:
        return self.voices[0]

    def stream(self, text: str, voice: str) -> AsyncIterator[np.ndarray]:
        return self._transport.stream("stream", text, voice)

    async def synthesize_all(self, text: str, voice: str) -> np.ndarray:
        parts: list[np.ndarray] = []
        samples = self.stream(text, voice)
        try:
            async for part in samples:
                parts.append(part)
        finally:
            await samples.aclose()  # type: ignore[attr-defined]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def sentences(self, text: str) -> list[str]:
        return split_sentences(text, self.max_sentence_chars)


class RemoteTranscriptionEngine(RemoteEngine):
    """Stands for a ``TranscriptionEngine``: the samples go to the host, the info and each
    segment come back as they are decoded."""

    what = "transcription"
    multilingual: bool
    languages: dict[str, str]

    def stream(self, samples: np.ndarray, options: Any) -> AsyncIterator[Any]:
        return self._transport.stream("transcribe", samples, options)


class RemoteRerankEngine(RemoteEngine):
    """Stands for a ``RerankEngine``: the query and documents go to the host, scores return."""

    what = "rerank"

    async def rerank(self, query: str, documents: Any, raw: bool = False) -> Any:
        return await self._transport.call("rerank", query, list(documents), raw)


PROXIES: dict[str, type[RemoteEngine]] = {
    "chat": RemoteChatEngine, "embedding": RemoteEmbeddingBatcher, "speech": RemoteSpeechEngine,
    "transcription": RemoteTranscriptionEngine, "rerank": RemoteRerankEngine}


class EngineHost:
    """The other side: serves a proxy's calls on a real engine (in a worker or a replica).

    Method names are what proxies call: ``tokenize`` and ``stream`` for chat, ``embed`` for
    embeddings, ``rerank`` for rerank, ``stream`` for speech, ``transcribe`` for speech-to-text.
    """

    def __init__(self, kind: str, engine: Any) -> None:
        self.kind = kind
        self.engine = engine

    async def tokenize(self, source: PromptSource) -> list[int]:
        what, value = source
        if what == "messages":
            return list(await self.engine.prompt_tokens(value))
        if what == "text":
            return list(await self.engine.text_tokens(value))
        if what == "content":  # /tokenize: (text, add_special)
            return list(await self.engine.content_tokens(*value))
        return list(value)

    def stream(self, *args: Any) -> AsyncIterator[Any]:
        if self.kind == "speech":
            text, voice = args
            return self.engine.stream(text, voice)
        source, params = args
        what, value = source
        if what == "tokens":
            return self.engine.stream_prompt(list(value), params)
        if what == "group":
            return self.engine.stream_group(list(value))
        return self._chat_after_tokenizing(source, params)

    async def _chat_after_tokenizing(self, source: PromptSource,
                                     params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        chunks = self.engine.stream_prompt(await self.tokenize(source), params)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    async def detokenize(self, tokens: list[int]) -> str:
        return await asyncio.to_thread(self.engine.detokenize, tokens)

    async def pieces(self, tokens: list[int]) -> list[bytes]:
        return list(await self.engine.pieces(tokens))

    async def embed(self, texts: list[str], task: str) -> Any:
        return await self.engine.embed(texts, task)

    async def rerank(self, query: str, documents: list[str], raw: bool) -> Any:
        return await self.engine.rerank(query, documents, raw)

    def transcribe(self, samples: Any, options: Any) -> AsyncIterator[Any]:
        return self.engine.stream(samples, options)

    def queue_stats(self) -> tuple[int, int] | None:
        stats = getattr(self.engine, "queue_stats", None)
        return stats() if stats is not None else None


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (tuple, list, frozenset)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def public_attributes(engine: Any) -> dict[str, Any]:
    """The engine's public plain-valued attributes (ids, sizes, voices...), for its proxy."""
    found: dict[str, Any] = {}
    for name in dir(engine):
        if name.startswith("_"):
            continue
        try:
            value = getattr(engine, name)
        except Exception:
            continue
        if not callable(value) and _plain(value):
            found[name] = value
    return found
