"""The rerank model slot, from what ``LABS_RERANK_MODEL`` names."""

from __future__ import annotations

import functools

from labs_api.engines.rerank.base import RerankEngine
from labs_api.models import ModelSlot
from labs_api.settings import Settings


def load_rerank_engine(source: str, model_id: str, settings: Settings) -> RerankEngine:
    from labs_api.engines.rerank.cross_encoder_engine import CrossEncoderEngine

    return CrossEncoderEngine(model_id, source, threads=settings.embedding_threads,
                              hf_token=settings.hf_token)


def rerank_slot(settings: Settings, model_id: str | None = None) -> ModelSlot:
    source = settings.rerank_model
    assert source is not None
    return ModelSlot(model_id=model_id or source, kind="rerank",
                     load=functools.partial(load_rerank_engine, source, model_id or source,
                                            settings),
                     description=f"rerank via a sentence-transformers CrossEncoder ({source})")
