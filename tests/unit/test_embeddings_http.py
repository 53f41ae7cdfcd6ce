"""HTTP layer of /v1/embeddings and /v1/similarities with a scripted engine behind the real
batcher: shapes, order, encodings, dimensions, and every error case."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.engines.embedding.batcher import EmbeddingBatcher
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine
from tests.openai_schema import assert_matches_openai
from tests.unit.test_embeddings_batcher import FakeEmbeddingEngine, hold_worker

MODEL = "fake-embed"
CHAT = "fake-chat"


def registry_for(batcher: EmbeddingBatcher, state: str = "ready") -> ModelRegistry:
    chat = ModelSlot(model_id=CHAT, kind="chat", load=lambda: None, state="ready",
                     engine=FakeChatEngine(CHAT))
    embed = ModelSlot(model_id=MODEL, kind="embedding", load=lambda: batcher, state=state,
                      engine=batcher if state == "ready" else None)
    return ModelRegistry([chat, embed])


@pytest.fixture
def engine() -> FakeEmbeddingEngine:
    return FakeEmbeddingEngine(MODEL)


@pytest.fixture
def batcher(engine):
    batcher = EmbeddingBatcher(engine, batch_size=8, max_wait=0.0, max_queue=64, warm_up=False)
    yield batcher
    batcher.close()


@pytest.fixture
def client(batcher) -> TestClient:
    return TestClient(create_app(Settings(), registry_for(batcher)),
                      raise_server_exceptions=False)


def embed(client: TestClient, **body) -> dict:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def floats(body: dict) -> np.ndarray:
    return np.array([item["embedding"] for item in body["data"]], dtype=np.float32)


# ---- /v1/embeddings: successful requests ---------------------------------------------------


def test_a_list_gets_one_vector_per_input_in_order_in_openai_shape(client, engine):
    texts = ["Hello world", "How are you?", "a b c d", "Hello world again"]
    body = embed(client, input=texts, model=MODEL, encoding_format="float")
    assert_matches_openai(body, "CreateEmbeddingResponse")
    assert body["object"] == "list" and body["model"] == MODEL
    assert [item["index"] for item in body["data"]] == [0, 1, 2, 3]
    assert all(item["object"] == "embedding" for item in body["data"])
    expected = np.stack([engine.vector(t) for t in texts])
    np.testing.assert_allclose(floats(body), expected, atol=1e-6)  # each row is its own input
    assert body["usage"] == {"prompt_tokens": 2 + 3 + 4 + 3, "total_tokens": 12}


def test_a_string_gets_one_vector_and_model_defaults_to_the_embedding_model(client, engine):
    body = embed(client, input="just one")
    assert_matches_openai(body, "CreateEmbeddingResponse")
    assert body["model"] == MODEL and len(body["data"]) == 1
    np.testing.assert_allclose(floats(body)[0], engine.vector("just one"), atol=1e-6)
    assert np.linalg.norm(floats(body)[0]) == pytest.approx(1.0, abs=1e-6)


def test_base64_is_little_endian_float32_equal_to_the_floats(client):
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    as_floats = floats(embed(client, input=texts))
    body = embed(client, input=texts, encoding_format="base64")
    decoded = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
                        for item in body["data"]])
    assert decoded.shape == (3, 16)
    np.testing.assert_allclose(decoded, as_floats, atol=1e-6)
    assert body["usage"]["prompt_tokens"] == 6


def test_encoding_format_null_means_float(client):
    body = embed(client, input="x y", encoding_format=None)
    assert isinstance(body["data"][0]["embedding"], list)


@pytest.mark.parametrize("dimensions", [1, 5, 8, 16])
def test_dimensions_keeps_a_renormalised_prefix(client, engine, dimensions):
    body = embed(client, input=["some words here", "more"], dimensions=dimensions)
    assert_matches_openai(body, "CreateEmbeddingResponse")
    short = floats(body)
    assert short.shape == (2, dimensions)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)
    full = engine.vector("some words here")
    prefix = full[:dimensions] / np.linalg.norm(full[:dimensions])
    np.testing.assert_allclose(short[0], prefix, atol=1e-6)


def test_input_type_query_uses_the_query_prompt_and_document_is_the_default(client, engine):
    default = floats(embed(client, input="find cats"))[0]
    document = floats(embed(client, input="find cats", input_type="document"))[0]
    query = floats(embed(client, input="find cats", input_type="query"))[0]
    np.testing.assert_allclose(default, document, atol=1e-7)
    np.testing.assert_allclose(query, engine.vector("find cats", "query"), atol=1e-6)
    assert not np.allclose(query, document)
    assert [task for _, task in engine.calls] == ["document", "document", "query"]


def test_user_is_accepted(client):
    assert len(embed(client, input="hi", user="user-1234")["data"]) == 1


def test_2048_inputs_are_accepted(client):
    body = embed(client, input=[f"w{i}" for i in range(2048)], encoding_format="base64")
    assert [item["index"] for item in body["data"]] == list(range(2048))


def test_concurrent_requests_are_answered_each_with_its_own_vector_in_shared_calls(batcher,
                                                                                    engine):
    app = create_app(Settings(), registry_for(batcher))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            blocker = await hold_worker(engine, batcher)
            posts = [asyncio.ensure_future(http.post("/v1/embeddings",
                                                     json={"input": f"text {i}"}))
                     for i in range(16)]
            while batcher.waiting < 16:
                await asyncio.sleep(0.01)
            engine.gate.set()
            await blocker
            return await asyncio.gather(*posts)

    responses = asyncio.run(scenario())
    for i, response in enumerate(responses):
        assert response.status_code == 200
        vector = np.array(response.json()["data"][0]["embedding"], dtype=np.float32)
        np.testing.assert_allclose(vector, engine.vector(f"text {i}"), atol=1e-6)
    assert [len(texts) for texts, _ in engine.calls] == [1, 8, 8]  # 16 requests, 2 calls


# ---- /v1/embeddings: errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": []}, "input", "at least one"),
        ({"input": ""}, "input", "empty string"),
        ({"input": ["ok", ""]}, "input", "empty strings"),
        ({"input": ["x"] * 2049}, "input", "at most 2048 inputs per request, got 2049"),
        ({"input": [1, 2, 3]}, "input", "token-id arrays are not supported"),
        ({"input": [[1, 2], [3]]}, "input", "token-id arrays are not supported"),
        ({"input": 42}, "input", "a string or a list of strings"),
        ({"input": [None]}, "input", "only strings (not at indexes [0])"),
        ({"input": ["a", 3]}, "input", "only strings (not at indexes [1])"),
        ({}, "input", "required"),
        ({"input": "x", "encoding_format": "binary"}, "encoding_format", None),
        ({"input": "x", "dimensions": 0}, "dimensions", None),
        ({"input": "x", "dimensions": "big"}, "dimensions", None),
        ({"input": "x", "model": ""}, "model", None),
        ({"input": "x", "input_type": "poem"}, "input_type", None),
        ({"input": "x", "temperature": 1}, "temperature", "extra"),
    ],
)
def test_invalid_requests_get_422_naming_the_field(client, engine, body, param, words):
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["detail"]  # FastAPI's list, as the spec shows
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["param"].split(".")[0] == param
    if words:
        assert words.lower() in payload["error"]["message"].lower()
    assert engine.calls == []  # nothing reached the model


def test_malformed_json_is_400(client):
    response = client.post("/v1/embeddings", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "Malformed JSON" in response.json()["error"]["message"]


def test_dimensions_beyond_the_model_is_400(client, engine):
    response = client.post("/v1/embeddings", json={"input": "x", "dimensions": 17})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "dimensions" and "16" in error["message"]
    assert_matches_openai(response.json(), "ErrorResponse")
    assert engine.calls == []


def test_an_input_longer_than_the_model_reads_is_400_naming_it(client, engine):
    response = client.post("/v1/embeddings", json={"input": ["fine", "word " * 11]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "input[1]"
    assert "13 tokens" in error["message"] and "at most 12" in error["message"]
    assert engine.calls == []


@pytest.mark.parametrize("model", ["nope", CHAT])
def test_a_model_not_served_for_embeddings_is_404_listing_the_served_one(client, model):
    response = client.post("/v1/embeddings", json={"input": "x", "model": model})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert f"'{model}'" in error["message"] and f"'{MODEL}'" in error["message"]
    assert_matches_openai(response.json(), "ErrorResponse")


def test_while_the_model_loads_requests_get_503_with_retry_after(batcher):
    client = TestClient(create_app(Settings(), registry_for(batcher, state="loading")))
    for path, body in [("/v1/embeddings", {"input": "x"}), ("/v1/similarities",
                                                            {"sentences": ["x"]})]:
        response = client.post(path, json=body)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "model_loading"


def test_past_the_queue_bound_requests_get_503_with_retry_after_and_a_reason(engine):
    batcher = EmbeddingBatcher(engine, batch_size=4, max_wait=0.0, max_queue=4, warm_up=False)
    app = create_app(Settings(), registry_for(batcher))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            blocker = await hold_worker(engine, batcher)
            queued = asyncio.ensure_future(http.post("/v1/embeddings",
                                                     json={"input": ["a", "b", "c", "d"]}))
            while batcher.waiting < 4:
                await asyncio.sleep(0.01)
            refused = await http.post("/v1/embeddings", json={"input": "one more"})
            refused_sim = await http.post("/v1/similarities", json={"sentences": ["x"]})
            engine.gate.set()
            await blocker
            return refused, refused_sim, await queued

    try:
        refused, refused_sim, queued = asyncio.run(scenario())
    finally:
        batcher.close()
    for response in (refused, refused_sim):
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]
        assert error["code"] == "server_overloaded" and "queue is full" in error["message"]
    assert queued.status_code == 200 and len(queued.json()["data"]) == 4


def test_an_engine_failure_is_500_with_a_message_not_a_traceback(client, engine):
    engine.fail_with = RuntimeError("tensor on fire")
    response = client.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "tensor on fire" in message and MODEL in message and "Traceback" not in message


# ---- /v1/similarities ----------------------------------------------------------------------


def test_similarities_are_the_cosine_matrix_symmetric_with_unit_diagonal(client, engine):
    sentences = ["the cat sat", "the cat sat down", "stock prices fell", "cat"]
    response = client.post("/v1/similarities", json={"sentences": sentences, "model": MODEL})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL and body["shape"] == [4, 4]
    matrix = np.array(body["similarities"])
    assert matrix.shape == (4, 4)
    assert (matrix == matrix.T).all() and (np.diag(matrix) == 1.0).all()
    vectors = np.stack([engine.vector(s, "similarity") for s in sentences])
    np.testing.assert_allclose(matrix, vectors @ vectors.T, atol=1e-6)
    assert matrix[0, 1] > matrix[0, 2]
    assert engine.calls[-1][1] == "similarity"


def test_one_sentence_gives_a_one_by_one_matrix(client):
    body = client.post("/v1/similarities", json={"sentences": ["alone"]}).json()
    assert body["similarities"] == [[1.0]] and body["shape"] == [1, 1]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"sentences": []}, "at least one"),
        ({"sentences": [f"s{i}" for i in range(257)]}, "at most 256 sentences"),
        ({"sentences": ["a", ""]}, "empty strings"),
        ({"sentences": "a single string"}, "list of strings"),
        ({"sentences": [[1, 2]]}, "token-id arrays"),
        ({}, "required"),
        ({"sentences": ["a"], "encoding_format": "float"}, "extra"),
    ],
)
def test_invalid_similarity_requests_get_422_with_a_clear_message(client, body, words):
    response = client.post("/v1/similarities", json=body)
    assert response.status_code == 422, response.text
    assert words.lower() in response.json()["error"]["message"].lower()


def test_similarities_limits_and_errors_match_embeddings(client):
    assert client.post("/v1/similarities",
                       json={"sentences": [f"s{i}" for i in range(256)]}).status_code == 200
    too_long = client.post("/v1/similarities", json={"sentences": ["ok", "word " * 20]})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "sentences[1]"
    wrong = client.post("/v1/similarities", json={"sentences": ["x"], "model": "nope"})
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"


# ---- the rest of the API sees the embedding model ------------------------------------------


def test_the_embedding_model_is_listed_and_the_endpoints_documented(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == [CHAT, MODEL]
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    schema = client.get("/openapi.json").json()
    assert {"/v1/embeddings", "/v1/similarities"} <= set(schema["paths"])
    ready = client.get("/ready").json()
    assert ("embedding", "ready") in [(m["kind"], m["state"]) for m in ready["models"]]


def test_embedding_settings_reject_fp16_and_bad_batching_values(monkeypatch):
    from pydantic import ValidationError

    for name, value in [("LABS_EMBEDDING_DTYPE", "fp16"), ("LABS_EMBEDDING_BATCH_SIZE", "0"),
                        ("LABS_EMBEDDING_MAX_QUEUE", "0"), ("LABS_EMBEDDING_MAX_WAIT_MS", "-1"),
                        ("LABS_EMBEDDING_THREADS", "-2"), ("LABS_EMBEDDING_BACKEND", "tensorrt")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError) as error:
            Settings()
        assert name.removeprefix("LABS_").lower() in json.dumps(error.value.errors(),
                                                                 default=str)
        monkeypatch.delenv(name)
    monkeypatch.setenv("LABS_EMBEDDING_DTYPE", "bf16")
    monkeypatch.setenv("LABS_EMBEDDING_TRUNCATE", "true")
    settings = Settings()
    assert settings.embedding_dtype == "bf16" and settings.embedding_truncate
