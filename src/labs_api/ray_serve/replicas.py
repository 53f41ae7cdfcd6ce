"""The Ray Serve deployments: one per served model, and the HTTP ingress in front of them.

A model replica builds its engine once, in its constructor, through the same slot the
single-process server uses (``labs_api.catalog``), and serves calls from the ingress's proxy
engines (``proxies.py``). A model that fails to load is reported, not retried: the ingress
marks it failed, as the single-process server does, and keeps serving the others.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from labs_api.catalog import build_registry
from labs_api.engines.chat.base import GenerationChunk, SamplingParams
from labs_api.engines.remote import EngineHost, PromptSource, public_attributes
from labs_api.models import ModelKind, ModelSlot
from labs_api.ray_serve.errors import ErrorReport, ReplicaError
from labs_api.ray_serve.options import INGRESS_NAME
from labs_api.settings import Settings

log = logging.getLogger("labs_api.ray_serve")


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("labs_api").setLevel(settings.log_level.upper())


def _slot(settings: Settings, model_id: str) -> ModelSlot:
    registry = build_registry(settings)
    slot = registry.find(model_id)
    if slot is None:
        raise LookupError(f"no model '{model_id}' in the catalog: served {registry.ids()}")
    return slot


class ModelReplica:
    """One replica of one model: loads the engine once, reports it, closes it on shutdown."""

    kind: ModelKind

    def __init__(self, settings: Settings, model_id: str) -> None:
        _configure_logging(settings)
        self.model_id = model_id
        self.active = 0  # calls in progress (streams open), for tests and describe()
        self.engine: Any = None
        self.error: ErrorReport | None = None
        started = time.perf_counter()
        try:
            self.engine = _slot(self.adapt(settings), model_id).load()
        except Exception as exc:  # reported to the ingress, which marks the model failed
            log.exception("failed to load %s model %s", self.kind, model_id)
            self.error = ErrorReport.of(exc)
        self.load_seconds = time.perf_counter() - started
        if self.engine is not None:
            log.info("%s model %s ready in %.1f s (pid %d)", self.kind, model_id,
                     self.load_seconds, os.getpid())

    def adapt(self, settings: Settings) -> Settings:
        """The settings this replica loads its engine with."""
        return settings

    async def describe(self) -> dict[str, Any]:
        """What the ingress's proxy needs (the engine's attributes, or the load error), plus
        this replica's process id and work in progress."""
        import ray

        return {
            "model_id": self.model_id,
            "kind": self.kind,
            "attributes": public_attributes(self.engine) if self.engine is not None else {},
            "error": self.error,
            "load_seconds": self.load_seconds,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "active": self.active,
        }

    def _engine(self) -> Any:
        if self.engine is None:
            assert self.error is not None
            raise ReplicaError(self.error)
        return self.engine

    async def _relay(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Yield ``items``; engine errors become ``ReplicaError``. Closing this (the caller
        cancelled) closes ``items``, which stops the engine's work."""
        self.active += 1
        try:
            async for item in items:
                yield item
        except Exception as exc:
            raise ReplicaError(ErrorReport.of(exc)) from None
        finally:
            self.active -= 1
            await items.aclose()  # type: ignore[attr-defined]

    def __del__(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None and hasattr(engine, "close"):
            try:
                engine.close()
            except Exception:  # shutting down: report and go on
                log.exception("closing %s failed", self.model_id)


@serve.deployment
class ChatReplica(ModelReplica):
    kind = "chat"

    def adapt(self, settings: Settings) -> Settings:
        # LABS_N_THREADS=0 means one llama.cpp thread per core; in a replica, one per CPU
        # that Ray reserved for it (when that is at least one), so replicas share a node.
        cpus = int(settings.ray_chat_num_cpus)
        if settings.n_threads == 0 and cpus >= 1:
            return settings.model_copy(update={"n_threads": cpus})
        return settings

    async def stream(self, source: PromptSource, params: SamplingParams,
                     ) -> AsyncIterator[GenerationChunk]:
        try:
            engine = self._engine()
            chunks = EngineHost("chat", engine).stream(source, params)
        except ReplicaError:
            raise
        except Exception as exc:  # e.g. the prompt does not fit: 400 before any chunk
            raise ReplicaError(ErrorReport.of(exc)) from None
        async for chunk in self._relay(chunks):
            yield chunk


    async def tokenize(self, source: PromptSource) -> list[int]:
        """The prompt's tokens (what the ingress asks before it starts a stream)."""
        try:
            return await EngineHost("chat", self._engine()).tokenize(source)
        except ReplicaError:
            raise
        except Exception as exc:
            raise ReplicaError(ErrorReport.of(exc)) from None

    async def detokenize(self, tokens: list[int]) -> str:
        """The text of token ids (/detokenize, and echo of a token-id prompt)."""
        return await self._host_call("detokenize", tokens)

    async def pieces(self, tokens: list[int]) -> list[bytes]:
        """Each token's bytes (/tokenize with_pieces)."""
        return await self._host_call("pieces", tokens)

    async def _host_call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(EngineHost("chat", self._engine()), method)(*args)
        except ReplicaError:
            raise
        except Exception as exc:
            raise ReplicaError(ErrorReport.of(exc)) from None


@serve.deployment
class EmbeddingReplica(ModelReplica):
    kind = "embedding"

    async def embed(self, texts: list[str], task: str) -> Any:
        batcher = self._engine()
        self.active += 1
        try:
            return await batcher.embed(texts, task)
        except Exception as exc:
            raise ReplicaError(ErrorReport.of(exc)) from None
        finally:
            self.active -= 1


@serve.deployment
class SpeechReplica(ModelReplica):
    kind = "speech"

    async def stream(self, text: str, voice: str) -> AsyncIterator[Any]:
        """The float32 samples of each sentence, as soon as it is synthesised."""
        engine = self._engine()
        async for samples in self._relay(engine.stream(text, voice)):
            yield samples


REPLICAS: dict[ModelKind, Any] = {"chat": ChatReplica, "embedding": EmbeddingReplica,
                                  "speech": SpeechReplica}


@serve.deployment(name=INGRESS_NAME)
@serve.ingress()
class Ingress:
    """``create_app`` itself, on a registry whose engines are proxies for the model
    deployments: every endpoint, validation, error and stream is the single-process code."""

    def __init__(self, settings: Settings, handles: dict[str, Any]) -> None:
        _configure_logging(settings)
        self.settings = settings
        self.handles = handles

    def __serve_build_asgi_app__(self):
        from labs_api.app import create_app
        from labs_api.ray_serve.proxies import proxy_registry

        return create_app(self.settings, proxy_registry(self.settings, self.handles))
