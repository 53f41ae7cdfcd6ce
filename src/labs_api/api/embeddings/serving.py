"""Turning embedding and similarity requests into batcher calls and OpenAI-shaped responses."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np

from labs_api.api.embeddings.protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    SimilarityRequest,
    SimilarityResponse,
)
from labs_api.engines.embedding.base import (
    EmbeddingTask,
    InputTooLongError,
    cosine_matrix,
    shorten,
)
from labs_api.engines.embedding.batcher import (
    BatcherClosedError,
    BatcherOverloadedError,
    EmbeddingBatcher,
    EmbeddingResult,
)
from labs_api.engines.errors import EngineRequestError
from labs_api.errors import (
    APIError,
    BadRequestError,
    ContextLengthError,
    EngineError,
    ServiceUnavailableError,
)
from labs_api.models import ModelRegistry


class EmbeddingService:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        batcher: EmbeddingBatcher = await self.registry.engine(
            "embedding", request.model, request.keep_alive)
        if request.dimensions is not None and request.dimensions > batcher.dimensions:
            raise BadRequestError(
                f"dimensions={request.dimensions} is larger than the {batcher.dimensions} "
                f"dimensions of '{batcher.model_id}'.",
                param="dimensions",
                code="invalid_dimensions",
            )
        result = await run(batcher, request.texts(), request.task(), param="input")
        vectors = result.vectors
        if request.dimensions is not None:
            vectors = shorten(vectors, request.dimensions)
        as_base64 = request.encoding_format == "base64"
        data = [
            EmbeddingData(index=i, embedding=to_base64(row) if as_base64 else row.tolist())
            for i, row in enumerate(vectors)
        ]
        tokens = sum(count.text for count in result.tokens)
        return EmbeddingResponse(
            data=data,
            model=batcher.model_id,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def similarities(self, request: SimilarityRequest) -> SimilarityResponse:
        batcher: EmbeddingBatcher = await self.registry.engine(
            "embedding", request.model, request.keep_alive)
        result = await run(batcher, request.sentences, "similarity", param="sentences")
        matrix = cosine_matrix(result.vectors)
        n = len(request.sentences)
        return SimilarityResponse(similarities=matrix.tolist(), model=batcher.model_id,
                                  shape=[n, n])


async def run(batcher: EmbeddingBatcher, texts: Sequence[str], task: EmbeddingTask, *,
              param: str) -> EmbeddingResult:
    """Embed through the batcher, turning its errors into API errors."""
    try:
        return await batcher.embed(texts, task)
    except InputTooLongError as exc:
        raise ContextLengthError(str(exc), param=f"{param}[{exc.index}]") from None
    except BatcherOverloadedError as exc:
        raise ServiceUnavailableError(str(exc), retry_after=exc.retry_after,
                                      code="server_overloaded") from None
    except BatcherClosedError as exc:
        raise ServiceUnavailableError(f"The {batcher.model_id} model is shutting down: {exc}.",
                                      retry_after=5, code="shutting_down") from None
    except (APIError, EngineRequestError):
        raise
    except Exception as exc:
        raise EngineError(f"Embedding with '{batcher.model_id}' failed: "
                          f"{type(exc).__name__}: {exc}") from exc


def to_base64(vector: np.ndarray) -> str:
    """OpenAI's base64 encoding: the raw little-endian float32 bytes."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
