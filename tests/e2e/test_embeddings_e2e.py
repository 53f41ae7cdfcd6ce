"""The real server on the bundled all-MiniLM-L6-v2: the official openai client, the spec's
requests, meaning, and concurrent clients."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest

from labs_api.settings import DEFAULT_EMBEDDING_MODEL
from tests.openai_schema import assert_matches_openai

pytestmark = pytest.mark.slow

DOG = "A dog is playing in the park"
PUPPY = "A puppy plays outside"
TAXES = "Quarterly tax filing deadlines"


def post(base_url: str, path: str, **body) -> dict:
    response = httpx.post(f"{base_url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def vectors_of(body: dict) -> np.ndarray:
    return np.array([item["embedding"] for item in body["data"]], dtype=np.float32)


def test_the_embedding_model_is_served_and_listed(base_url):
    ids = [m["id"] for m in httpx.get(f"{base_url}/v1/models").json()["data"]]
    assert DEFAULT_EMBEDDING_MODEL in ids
    card = httpx.get(f"{base_url}/v1/models/{DEFAULT_EMBEDDING_MODEL}").json()
    assert card["id"] == DEFAULT_EMBEDDING_MODEL


def test_the_spec_request_gives_384_unit_vectors_in_openai_shape(base_url):
    body = post(base_url, "/v1/embeddings", input=["Hello world", "How are you?"],
                model=DEFAULT_EMBEDDING_MODEL, encoding_format="float")
    assert_matches_openai(body, "CreateEmbeddingResponse")
    assert body["model"] == DEFAULT_EMBEDDING_MODEL
    assert [item["index"] for item in body["data"]] == [0, 1]
    vectors = vectors_of(body)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}  # as the spec's example


def test_meaning_a_dog_is_closer_to_a_puppy_than_to_taxes(base_url):
    dog, puppy, taxes = vectors_of(post(base_url, "/v1/embeddings", input=[DOG, PUPPY, TAXES]))
    assert float(dog @ puppy) > float(dog @ taxes) + 0.3
    similar = post(base_url, "/v1/similarities", sentences=[DOG, PUPPY, TAXES])
    matrix = np.array(similar["similarities"])
    assert similar["shape"] == [3, 3] and similar["model"] == DEFAULT_EMBEDDING_MODEL
    assert (matrix == matrix.T).all() and (np.diag(matrix) == 1.0).all()
    assert matrix[0, 1] > matrix[0, 2] + 0.3
    assert matrix[0, 1] == pytest.approx(float(dog @ puppy), abs=1e-5)


def test_the_official_client_default_base64_decodes_to_the_float_vectors(openai_client,
                                                                         base_url):
    texts = [DOG, PUPPY, "Hello world"]
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    result = openai_client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input=texts)
    assert [item.index for item in result.data] == [0, 1, 2]
    from_sdk = np.array([item.embedding for item in result.data], dtype=np.float32)
    as_floats = vectors_of(post(base_url, "/v1/embeddings", input=texts))
    np.testing.assert_allclose(from_sdk, as_floats, atol=1e-6)
    assert result.model == DEFAULT_EMBEDDING_MODEL
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0


def test_raw_base64_is_little_endian_float32(base_url):
    body = post(base_url, "/v1/embeddings", input="Hello world", encoding_format="base64")
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert len(raw) == 384 * 4
    decoded = np.frombuffer(raw, dtype="<f4")
    floats = vectors_of(post(base_url, "/v1/embeddings", input="Hello world"))[0]
    np.testing.assert_allclose(decoded, floats, atol=1e-6)


def test_the_official_client_with_floats_and_dimensions(openai_client):
    result = openai_client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input="Hello world",
                                             encoding_format="float", dimensions=128,
                                             user="user-1")
    vector = np.array(result.data[0].embedding)
    assert vector.shape == (128,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_the_official_client_sees_openai_errors(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.embeddings.create(model="text-embedding-3-small", input="x")
    assert DEFAULT_EMBEDDING_MODEL in str(missing.value)
    with pytest.raises(openai.BadRequestError) as too_long:
        openai_client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL,
                                        input=["fine", "word " * 300])
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as too_wide:
        openai_client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input="x",
                                        dimensions=385)
    assert "384" in str(too_wide.value)
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input=[""])


def test_concurrent_clients_each_get_their_own_vector(base_url):
    sentences = [f"Sentence number {i} is about {topic}" for i, topic in
                 enumerate(["cats", "stocks", "rain", "music", "bread", "code", "sleep", "tea"]
                           * 4)]
    alone = vectors_of(post(base_url, "/v1/embeddings", input=sentences))

    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/embeddings", json={"input": s})
                                          for s in sentences))

    responses = asyncio.run(many())
    assert all(r.status_code == 200 for r in responses)
    together = np.stack([vectors_of(r.json())[0] for r in responses])
    # Batched with other requests (different padding), each answer is still its own sentence.
    np.testing.assert_allclose(together, alone, atol=1e-4)
