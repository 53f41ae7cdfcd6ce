"""HTTP layer of /v1/rerank, /v2/rerank and /rerank: a scripted cross-encoder and the real
embedding batcher on a scripted embedding engine (the cosine fallback); every error case."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.engines.embedding.batcher import EmbeddingBatcher
from labs_api.engines.rerank.base import RerankEngine, RerankScores
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine
from tests.unit.test_embeddings_batcher import FakeEmbeddingEngine

EMBED = "fake-embed"
RERANK = "fake-rerank"
DOCS = ["the cat sat on the mat", "dogs chase a ball in the park", "stock prices fell today"]


class FakeRerankEngine(RerankEngine):
    """Scores a document by the query words it holds (raw), or that over 10 (not raw)."""

    def __init__(self, model_id: str = RERANK) -> None:
        super().__init__()
        self.model_id = model_id
        self.max_input_tokens = 32
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[tuple[str, list[str], bool]] = []

    def score(self, query: str, documents: Sequence[str], raw: bool) -> RerankScores:
        self.gate.wait(10)
        self.calls.append((query, list(documents), raw))
        words = set(query.lower().split())
        hits = [float(len(words & set(d.lower().split()))) for d in documents]
        scores = hits if raw else [h / 10 for h in hits]
        return RerankScores(scores, sum(len(d.split()) for d in documents))


def registry(batcher: EmbeddingBatcher, reranker: RerankEngine | None) -> ModelRegistry:
    slots = [ModelSlot(model_id="fake-chat", kind="chat", load=lambda: None, state="ready",
                       engine=FakeChatEngine()),
             ModelSlot(model_id=EMBED, kind="embedding", load=lambda: batcher, state="ready",
                       engine=batcher)]
    if reranker is not None:
        slots.append(ModelSlot(model_id=RERANK, kind="rerank", load=lambda: reranker,
                               state="ready", engine=reranker))
    return ModelRegistry(slots)


@pytest.fixture
def batcher():
    batcher = EmbeddingBatcher(FakeEmbeddingEngine(EMBED, max_input_tokens=12), batch_size=8,
                               max_wait=0.0, max_queue=64, warm_up=False)
    yield batcher
    batcher.close()


@pytest.fixture
def reranker() -> FakeRerankEngine:
    return FakeRerankEngine()


@pytest.fixture
def client(batcher, reranker) -> TestClient:
    return TestClient(create_app(Settings(), registry(batcher, reranker)),
                      raise_server_exceptions=False)


@pytest.fixture
def cosine_client(batcher) -> TestClient:
    return TestClient(create_app(Settings(), registry(batcher, None)),
                      raise_server_exceptions=False)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_cross_encoder_orders_best_first_with_cohere_fields(client, reranker, path):
    body = ok(client.post(path, json={"model": RERANK, "query": "dogs in the park",
                                      "documents": DOCS}))
    assert body["model"] == RERANK
    assert [r["index"] for r in body["results"]] == [1, 0, 2]
    assert [r["relevance_score"] for r in body["results"]] == [0.4, 0.1, 0.0]
    assert all("document" not in r for r in body["results"])
    assert body["usage"]["total_tokens"] == sum(len(d.split()) for d in DOCS)
    assert body["id"].startswith("rerank-")
    assert body["meta"]["billed_units"]["search_units"] == 1
    assert reranker.calls == [("dogs in the park", DOCS, False)]


def test_default_model_is_the_cross_encoder_when_served(client, reranker):
    body = ok(client.post("/v1/rerank", json={"query": "cat", "documents": DOCS}))
    assert body["model"] == RERANK and body["results"][0]["index"] == 0


def test_top_n_and_return_documents_and_text_objects(client):
    documents = [{"text": d} for d in DOCS]
    body = ok(client.post("/v1/rerank", json={"query": "dogs park", "documents": documents,
                                              "top_n": 2, "return_documents": True}))
    assert [(r["index"], r["document"]["text"]) for r in body["results"]] == [
        (1, DOCS[1]), (0, DOCS[0])]


def test_top_n_larger_than_the_documents_returns_them_all(client):
    body = ok(client.post("/v1/rerank", json={"query": "x", "documents": DOCS, "top_n": 50}))
    assert sorted(r["index"] for r in body["results"]) == [0, 1, 2]


def test_cosine_fallback_says_so_in_the_model_field_and_ranks_by_shared_words(cosine_client):
    body = ok(cosine_client.post("/v1/rerank", json={"query": "stock prices",
                                                     "documents": DOCS}))
    assert body["model"] == f"{EMBED} (embedding cosine similarity)"
    assert body["results"][0]["index"] == 2
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert body["usage"]["total_tokens"] == 2 + sum(len(d.split()) for d in DOCS)


def test_embedding_model_named_explicitly_uses_cosine_even_with_a_cross_encoder(client):
    body = ok(client.post("/v1/rerank", json={"model": EMBED, "query": "cat mat",
                                              "documents": DOCS}))
    assert body["model"].startswith(EMBED) and "cosine" in body["model"]


def test_tei_shape_with_raw_scores_and_text(client, reranker):
    body = ok(client.post("/rerank", json={"query": "dogs park", "texts": DOCS,
                                           "raw_scores": True, "return_text": True}))
    assert body == [{"index": 1, "score": 2.0, "text": DOCS[1]},
                    {"index": 0, "score": 0.0, "text": DOCS[0]},
                    {"index": 2, "score": 0.0, "text": DOCS[2]}]
    assert reranker.calls[-1][2] is True
    plain = ok(client.post("/rerank", json={"query": "dogs park", "texts": DOCS}))
    assert plain[0] == {"index": 1, "score": 0.2}


def test_unknown_model_is_404_listing_what_reranks(client):
    response = client.post("/v1/rerank", json={"model": "rerank-english-v3.0", "query": "q",
                                               "documents": ["a"]})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["param"] == "model" and RERANK in error["message"] and EMBED in error["message"]
    chat = client.post("/v1/rerank", json={"model": "fake-chat", "query": "q",
                                           "documents": ["a"]})
    assert chat.status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"query": "q", "documents": ["a"] * 1001}, "documents"),
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": "just a string"}, "documents"),
    ({"query": "q", "documents": ["a", ""]}, "documents"),
    ({"query": "q", "documents": [1, 2]}, "documents"),
    ({"query": "q", "documents": [{"title": "no text"}]}, "documents"),
    ({"query": "", "documents": ["a"]}, "query"),
    ({"query": "   ", "documents": ["a"]}, "query"),
    ({"query": "q" * 8193, "documents": ["a"]}, "query"),
    ({"query": ["q"], "documents": ["a"]}, "query"),
    ({"documents": ["a"]}, "query"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": ["a"], "top_n": 1.5}, "top_n"),
    ({"query": "q", "documents": ["a"], "rank_fields": ["x"]}, "rank_fields"),
])
def test_bad_requests_are_422_naming_the_field(client, reranker, body, field):
    response = client.post("/v1/rerank", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"].startswith(field)
    assert reranker.calls == []


@pytest.mark.parametrize(("body", "field"), [
    ({"query": "q", "texts": ["a"] * 1001}, "texts"),
    ({"query": "q", "texts": [""]}, "texts"),
    ({"query": "q", "documents": ["a"]}, "texts"),
    ({"query": "q", "texts": ["a"], "truncate": True}, "truncate"),
])
def test_tei_bad_requests_are_422(client, body, field):
    response = client.post("/rerank", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]


def test_documents_over_the_character_limit_are_400_before_validation(batcher, reranker):
    app = create_app(Settings(max_embedding_chars=1000), registry(batcher, reranker))
    client = TestClient(app, raise_server_exceptions=False)
    response = client.post("/v1/rerank", json={"query": "q", "documents": ["x" * 600] * 2})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "documents" and "LABS_MAX_EMBEDDING_CHARS" in error["message"]
    objects = client.post("/v2/rerank", json={"query": "q",
                                              "documents": [{"text": "x" * 1001}]})
    assert objects.status_code == 400
    tei = client.post("/rerank", json={"query": "q", "texts": ["x" * 1001]})
    assert tei.status_code == 400 and tei.json()["error"]["param"] == "texts"
    assert reranker.calls == []


def test_a_document_too_long_for_the_embedding_model_is_400_naming_it(cosine_client):
    long = " ".join(["word"] * 40)  # the fake embedding model reads 12 tokens
    response = cosine_client.post("/v1/rerank", json={"query": "q", "documents": ["a", long]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "documents[1]"


def test_a_busy_cross_encoder_answers_503_with_retry_after(batcher):
    reranker = FakeRerankEngine()
    reranker.max_waiting = 0
    reranker._admitted = 1  # one request already in progress
    client = TestClient(create_app(Settings(), registry(batcher, reranker)),
                        raise_server_exceptions=False)
    response = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "server_overloaded"
