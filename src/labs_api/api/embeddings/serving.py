"""Turning embedding and similarity requests into batcher calls and OpenAI-shaped responses."""

from __future__ import annotations

from collections.abc import Sequence

from labs_api.api.embeddings.encoding import JSONBytes, embedding_response, similarity_response
from labs_api.api.embeddings.protocol import EmbeddingRequest, SimilarityRequest
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

    async def embeddings(self, request: EmbeddingRequest) -> JSONBytes:
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
        tokens = sum(count.text for count in result.tokens)
        return await embedding_response(vectors, batcher.model_id, tokens,
                                        as_base64=request.encoding_format == "base64")

    async def similarities(self, request: SimilarityRequest) -> JSONBytes:
        batcher: EmbeddingBatcher = await self.registry.engine(
            "embedding", request.model, request.keep_alive)
        result = await run(batcher, request.sentences, "similarity", param="sentences")
        return await similarity_response(cosine_matrix(result.vectors), batcher.model_id)


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

