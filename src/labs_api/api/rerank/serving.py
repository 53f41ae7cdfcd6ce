"""Scoring documents against a query: by the cross-encoder when one is served, else by the
cosine similarity of the embedding model's vectors."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from labs_api.api.embeddings.serving import run
from labs_api.api.rerank.protocol import (
    DocumentOut,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    TEIRank,
    TEIRerankRequest,
)
from labs_api.engines.rerank.base import RerankEngine, RerankScores
from labs_api.errors import ModelNotFoundError
from labs_api.models import ModelRegistry

COSINE_NOTE = "(embedding cosine similarity)"


@dataclass(frozen=True)
class Ranked:
    model: str  # what scored, as the response's ``model`` says it
    order: list[int]  # document indexes, best first
    scores: list[float]  # by document index
    tokens: int


class RerankService:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def rank(self, model: str | None, query: str, documents: list[str],
                   raw: bool = False) -> Ranked:
        kind = self._kind(model)
        if kind == "rerank":
            engine: RerankEngine = await self.registry.engine("rerank", model)
            result: RerankScores = await engine.rerank(query, documents, raw)
            label = engine.model_id
        else:
            batcher = await self.registry.engine("embedding", model)
            result = await cosine_scores(batcher, query, documents)
            label = f"{batcher.model_id} {COSINE_NOTE}"
        scores = result.scores
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return Ranked(label, order, scores, result.tokens)

    async def rerank(self, body: RerankRequest) -> RerankResponse:
        """Cohere's and Jina's answer: the best ``top_n``, with their text if asked."""
        texts = body.texts()
        ranked = await self.rank(body.model, body.query, texts)
        order = ranked.order[:body.top_n] if body.top_n else ranked.order
        results = [RerankResult(index=i, relevance_score=ranked.scores[i],
                                document=DocumentOut(text=texts[i]) if body.return_documents
                                else None) for i in order]
        return RerankResponse(id=new_rerank_id(), model=ranked.model, results=results,
                              usage=RerankUsage(prompt_tokens=ranked.tokens,
                                                total_tokens=ranked.tokens))

    async def tei(self, body: TEIRerankRequest) -> list[TEIRank]:
        """Text Embeddings Inference's answer: every text, best first."""
        ranked = await self.rank(body.model, body.query, body.texts, raw=body.raw_scores)
        return [TEIRank(index=i, score=ranked.scores[i],
                        text=body.texts[i] if body.return_text else None)
                for i in ranked.order]

    def _kind(self, model: str | None) -> str:
        if model is None:
            return "rerank" if self.registry.ids("rerank") else "embedding"
        slot = self.registry.find(model)
        if slot is not None and slot.kind in ("rerank", "embedding"):
            return slot.kind
        served = ", ".join(repr(i) for i in self.registry.ids("rerank")
                           + self.registry.ids("embedding")) or "none"
        raise ModelNotFoundError(
            f"The model '{model}' is not served for reranking here. Served: {served} (a "
            "cross-encoder from LABS_RERANK_MODEL, or the embedding model, which ranks by "
            "cosine similarity).", param="model")


async def cosine_scores(batcher, query: str, documents: list[str]) -> RerankScores:
    """The query's vector against each document's (unit vectors: a dot product)."""
    asked = await run(batcher, [query], "query", param="query")
    found = await run(batcher, documents, "document", param="documents")
    scores = np.clip(found.vectors.astype(np.float64) @ asked.vectors[0].astype(np.float64),
                     -1.0, 1.0)
    tokens = sum(c.text for c in asked.tokens) + sum(c.text for c in found.tokens)
    return RerankScores([float(s) for s in scores], tokens)


def new_rerank_id() -> str:
    return f"rerank-{uuid.uuid4().hex}"
