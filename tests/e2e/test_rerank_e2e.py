"""Rerank on the real server: the `cohere` Python client (v1 and v2 paths) on the bundled
embedding model's cosine fallback, TEI's shape with httpx, and a cross-encoder: a tiny
random-weight BertForSequenceClassification that the test builds and saves, served from its
directory in an engine worker of its own."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import running_server

pytestmark = pytest.mark.slow

cohere = pytest.importorskip("cohere")

DOG = "Which animal is a loyal pet that barks?"
DOCS = [
    "The stock market fell sharply on Tuesday after the bank raised interest rates.",
    "Dogs are loyal companions; they bark at strangers and love to fetch a ball.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar in plant leaves.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
]
COSINE = "sentence-transformers/all-MiniLM-L6-v2 (embedding cosine similarity)"
VOCAB = ["the", "a", "dog", "dogs", "bark", "barks", "loyal", "pet", "cat", "stock", "market",
         "fell", "bank", "rates", "flour", "egg", "salt", "plant", "leaves", "sun", "water",
         "which", "animal", "is", "that"]


def test_cohere_v2_client_ranks_the_dog_sentence_first(base_url):
    client = cohere.ClientV2(api_key="not-needed", base_url=base_url, max_retries=0)
    response = client.rerank(model="sentence-transformers/all-MiniLM-L6-v2", query=DOG,
                             documents=DOCS, top_n=2)
    assert [r.index for r in response.results][0] == 1
    assert len(response.results) == 2
    assert response.results[0].relevance_score > response.results[1].relevance_score
    assert all(-1 <= r.relevance_score <= 1 for r in response.results)


def test_cohere_v1_client_returns_documents_and_the_plain_model_name(base_url):
    client = cohere.Client(api_key="not-needed", base_url=base_url, max_retries=0)
    response = client.rerank(query=DOG, documents=DOCS, return_documents=True)
    ranked = [r.index for r in response.results]
    assert ranked[0] == 1 and sorted(ranked) == [0, 1, 2, 3]
    assert response.results[0].document.text == DOCS[1]
    raw = httpx.post(f"{base_url}/v1/rerank", json={"query": DOG, "documents": DOCS}).json()
    assert raw["model"] == COSINE  # no cross-encoder is configured: said plainly
    assert raw["usage"]["total_tokens"] > 40


def test_cohere_client_raises_on_our_4xx(base_url):
    client = cohere.ClientV2(api_key="not-needed", base_url=base_url, max_retries=0)
    with pytest.raises(cohere.core.api_error.ApiError) as unknown:
        client.rerank(model="rerank-english-v3.0", query=DOG, documents=DOCS)
    assert unknown.value.status_code == 404
    with pytest.raises(cohere.core.api_error.ApiError) as too_many:
        client.rerank(model="sentence-transformers/all-MiniLM-L6-v2", query=DOG,
                      documents=["a dog"] * 1001)
    assert too_many.value.status_code == 422
    assert "1000" in str(too_many.value.body)


def test_tei_shape_and_a_document_too_long_for_the_embedding_model(base_url):
    ranked = httpx.post(f"{base_url}/rerank", json={"query": DOG, "texts": DOCS,
                                                    "return_text": True}).json()
    assert ranked[0]["index"] == 1 and ranked[0]["text"] == DOCS[1]
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    long = httpx.post(f"{base_url}/v1/rerank", json={
        "query": DOG, "documents": ["short", "dog " * 400]}, timeout=60)
    assert long.status_code == 400
    assert long.json()["error"]["param"] == "documents[1]"
    health = httpx.get(f"{base_url}/health")
    assert health.status_code == 200


def build_cross_encoder(directory: Path) -> Path:
    """A 1-layer, 16-wide BERT with one output label and a word-level vocabulary: the shape of
    a reranking cross-encoder, random weights."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB) + 5, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(directory)
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def cross_encoder_url(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A server with LABS_RERANK_MODEL set, loading models on first use (only the reranker
    and the chat model's slot are touched)."""
    model = str(build_cross_encoder(tmp_path_factory.mktemp("cross-encoder")))
    log = tmp_path_factory.mktemp("rerank-server") / "server.log"
    env = {"LABS_RERANK_MODEL": model, "LABS_PRELOAD_ON_START": "false"}
    with running_server(env, log_path=log, wait_ready=False) as url:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url, model


def test_cross_encoder_scores_in_its_own_worker(cross_encoder_url):
    url, model = cross_encoder_url
    client = cohere.ClientV2(api_key="not-needed", base_url=url, max_retries=0, timeout=180)
    response = client.rerank(model=model, query=DOG, documents=DOCS)
    assert sorted(r.index for r in response.results) == [0, 1, 2, 3]
    scores = {r.index: r.relevance_score for r in response.results}
    assert all(0 < s < 1 for s in scores.values())  # the sigmoid of one logit
    body = httpx.post(f"{url}/v1/rerank", json={"query": DOG, "documents": DOCS}).json()
    assert body["model"] == model  # the default: the cross-encoder
    raw = httpx.post(f"{url}/rerank", json={"query": DOG, "texts": DOCS,
                                            "raw_scores": True}).json()
    for item in raw:
        assert 1 / (1 + math.exp(-item["score"])) == pytest.approx(scores[item["index"]],
                                                                   abs=1e-5)
    ready = httpx.get(f"{url}/ready").json()
    worker = next(m for m in ready["models"] if m["kind"] == "rerank")
    assert worker["state"] == "ready" and worker["pid"] is not None


def test_cross_encoder_cuts_long_documents_and_counts_what_it_read(cross_encoder_url):
    url, model = cross_encoder_url
    body = httpx.post(f"{url}/v1/rerank", json={
        "model": model, "query": "dog", "documents": ["dog " * 2000, "the cat"]},
        timeout=120).json()
    assert len(body["results"]) == 2
    assert body["usage"]["total_tokens"] <= 64 + 16  # the model's 64 tokens, plus the short
