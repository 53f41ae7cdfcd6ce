"""Proxy engines: the ingress's stand-ins for the engines that run in the model replicas.

Each proxy looks to the HTTP layer like the engine it stands for (the same attributes, copied
from the replica, and the same methods) and forwards every call through a Ray Serve
``DeploymentHandle``; streams are streaming handle calls, so chunks arrive as the replica
yields them, and closing a stream cancels the call in the replica. Errors come back as the
engine's own exceptions, or as 503 when a replica died (``errors.from_ray``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from labs_api.catalog import build_registry
from labs_api.engines.chat.base import ChatMessage, GenerationChunk, SamplingParams
from labs_api.models import ModelKind, ModelRegistry
from labs_api.ray_serve.errors import from_ray
from labs_api.settings import Settings

log = logging.getLogger("labs_api.ray_serve")

#: How long the ingress waits for a model deployment to answer its first call.
CONNECT_TIMEOUT_S = 900.0
#: Longest wait for a blocking tokenization (``PendingPrompt``) before a 503.
TOKENIZE_TIMEOUT_S = 10.0

_blocking_calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ray-blocking")


async def remote_stream(start: Callable[[], Any], what: str) -> AsyncIterator[Any]:
    """Iterate a streaming handle call, started on the first iteration (never before, so
    a stream that is dropped unread sends nothing). Closing early cancels the call."""
    finished = False
    try:
        responses = start()
    except Exception as exc:
        raise from_ray(exc, what) from None
    try:
        async for item in responses:
            yield item
        finished = True
    except Exception as exc:
        finished = True
        raise from_ray(exc, what) from None
    finally:
        if not finished:
            responses.cancel()


class RemoteEngine:
    """A proxy: the replica's engine attributes, and a handle to call it."""

    what = "model"

    def __init__(self, handle: Any, info: dict[str, Any]) -> None:
        self._handle = handle
        self._streaming = handle.options(stream=True)
        self.__dict__.update(info["attributes"])
        self.model_id = info["model_id"]

    def close(self) -> None:
        """The model lives in the replicas; nothing to release here."""


class PendingPrompt(Sequence[int]):
    """What ``RemoteChatEngine.tokenize_prompt`` returns. The chat replica owns the tokenizer,
    so the conversation (or text) travels with the stream and is tokenized there. Asking for
    the tokens here (its length, say: legacy completions count prompt tokens this way) fetches
    them from a replica, blocking the caller for one round trip."""

    def __init__(self, engine: RemoteChatEngine, source: tuple[str, Any]) -> None:
        self.engine = engine
        self.source = source
        self._tokens: list[int] | None = None

    def tokens(self) -> list[int] | None:
        """The tokens if they were fetched already, else None."""
        return self._tokens

    def _fetch(self) -> list[int]:
        if self._tokens is None:
            self._tokens = self.engine.fetch_tokens(self.source)
        return self._tokens

    def __len__(self) -> int:
        return len(self._fetch())

    def __getitem__(self, index):  # type: ignore[override]
        return self._fetch()[index]


class RemoteChatEngine(RemoteEngine):
    what = "chat"

    def tokenize_prompt(self, messages: list[ChatMessage]) -> PendingPrompt:
        return PendingPrompt(self, ("messages", list(messages)))

    def tokenize_text(self, text: str) -> PendingPrompt:
        return PendingPrompt(self, ("text", text))

    def fetch_tokens(self, source: tuple[str, Any]) -> list[int]:
        """Tokenize on a replica, now (blocking; on a helper thread, as Ray Serve wants no
        blocking handle call on an event loop thread)."""

        def call() -> list[int]:
            return self._handle.tokenize.remote(source).result(timeout_s=TOKENIZE_TIMEOUT_S)

        try:
            return _blocking_calls.submit(call).result()
        except Exception as exc:
            raise from_ray(exc, self.what) from None

    def check_supported(self, params: SamplingParams) -> None:
        """Checked by the replica's engine when the stream starts (same errors)."""

    def stream(self, messages: list[ChatMessage],
               params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        return self._stream(("messages", list(messages)), params)

    def stream_prompt(self, prompt: list[int],
                      params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        if isinstance(prompt, PendingPrompt):
            tokens = prompt.tokens()
            source = prompt.source if tokens is None else ("tokens", tokens)
        else:
            source = ("tokens", list(prompt))
        return self._stream(source, params)

    def _stream(self, source: tuple[str, Any],
                params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        return remote_stream(lambda: self._streaming.stream.remote(source, params), self.what)


class RemoteEmbeddingBatcher(RemoteEngine):
    """Stands for the replica's ``EmbeddingBatcher``: each call is batched there with the
    other calls that replica receives."""

    what = "embedding"

    async def embed(self, texts: Any, task: str) -> Any:
        response = self._handle.embed.remote(list(texts), task)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as exc:
            raise from_ray(exc, self.what) from None


class RemoteSpeechEngine(RemoteEngine):
    what = "speech"

    def stream(self, text: str, voice: str) -> AsyncIterator[np.ndarray]:
        return remote_stream(lambda: self._streaming.stream.remote(text, voice), self.what)

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
        from labs_api.engines.speech.sentences import split_sentences

        return split_sentences(text, self.max_sentence_chars)


PROXIES: dict[ModelKind, type[RemoteEngine]] = {
    "chat": RemoteChatEngine, "embedding": RemoteEmbeddingBatcher, "speech": RemoteSpeechEngine}


def describe(handle: Any, what: str, timeout_s: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """The model deployment's answer to ``describe`` (blocking: call it off the event loop).
    Waits while Ray is still placing or replacing its replicas."""
    import ray.exceptions
    import ray.serve.exceptions

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return handle.describe.remote().result(timeout_s=min(60.0, timeout_s))
        except (TimeoutError, ray.exceptions.RayError,
                ray.serve.exceptions.RayServeException) as exc:
            if time.monotonic() > deadline:
                raise from_ray(exc, what) from None
            log.info("waiting for the %s deployment: %s", what, type(exc).__name__)
            time.sleep(1.0)


def connect(kind: ModelKind, handle: Any) -> RemoteEngine:
    """The proxy for a model deployment; raises the replica's load error if it had one."""
    info = describe(handle, kind)
    if info["error"] is not None:
        raise info["error"].rebuild()
    return PROXIES[kind](handle, info)


def proxy_registry(settings: Settings, handles: dict[str, Any]) -> ModelRegistry:
    """The catalog's registry (same ids, kinds, order), each slot loading a proxy engine."""
    registry = build_registry(settings)
    for slot in registry.slots:
        slot.load = functools.partial(connect, slot.kind, handles[slot.model_id])
    return registry
