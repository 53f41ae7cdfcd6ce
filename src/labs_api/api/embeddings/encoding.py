"""The JSON bodies of embedding and similarity responses, written straight from the arrays.

Building a pydantic model per vector and letting FastAPI validate and serialise it cost more
than embedding the text (64 vectors of 384 floats: ~25k Python floats). orjson writes a numpy
array directly (float32 as its shortest round-trip form); large bodies are written on a thread
so one 2048-input request does not hold up every other client's response on the event loop.
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import orjson
from fastapi.responses import Response

#: Vectors above which the body is written on a worker thread (below, the hop costs more).
THREAD_ABOVE = 16


class JSONBytes(Response):
    media_type = "application/json"


def _embedding_body(vectors: np.ndarray, model: str, tokens: int, as_base64: bool) -> bytes:
    if as_base64:
        little = np.ascontiguousarray(vectors, dtype="<f4")
        data = [{"object": "embedding", "embedding": base64.b64encode(row.tobytes()).decode(),
                 "index": i} for i, row in enumerate(little)]
    else:
        data = [{"object": "embedding", "embedding": row, "index": i}
                for i, row in enumerate(np.ascontiguousarray(vectors, dtype=np.float32))]
    body = {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _similarity_body(matrix: np.ndarray, model: str) -> bytes:
    n = int(matrix.shape[0])
    body = {"similarities": np.ascontiguousarray(matrix, dtype=np.float64), "model": model,
            "shape": [n, n]}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


async def embedding_response(vectors: np.ndarray, model: str, tokens: int,
                             as_base64: bool) -> JSONBytes:
    """OpenAI's CreateEmbeddingResponse for ``vectors`` (unit float32 rows)."""
    if len(vectors) > THREAD_ABOVE:
        body = await asyncio.to_thread(_embedding_body, vectors, model, tokens, as_base64)
    else:
        body = _embedding_body(vectors, model, tokens, as_base64)
    return JSONBytes(body)


async def similarity_response(matrix: np.ndarray, model: str) -> JSONBytes:
    """The N×N similarity matrix with its ``shape``."""
    if len(matrix) > THREAD_ABOVE:
        return JSONBytes(await asyncio.to_thread(_similarity_body, matrix, model))
    return JSONBytes(_similarity_body(matrix, model))
