"""Hostile requests to rerank, /tokenize, /detokenize and Anthropic's /v1/messages on the real
server: huge lists, giant strings, wrong types, broken Unicode. Each is a 4xx naming the field
or the limit (in Anthropic's shape on /v1/messages), and the server answers the next good
request correctly."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.hostile.test_hostile_inputs import (
    EMBEDDING_MODEL,
    assert_error,
    assert_still_serving,
    post_raw,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(hostile_url) -> httpx.Client:
    with httpx.Client(base_url=hostile_url, timeout=120) as client:
        yield client


def dumps(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def assert_anthropic_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    for word in words:
        assert word in body["error"]["message"], body["error"]["message"]


def assert_rerank_works(client: httpx.Client) -> None:
    response = client.post("/v1/rerank", json={
        "query": "a barking dog", "documents": ["Interest rates rose.", "The dog barked."]})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["index"] == 1


@pytest.mark.parametrize("count", [1001, 200_000])
def test_too_many_rerank_documents(client, chat_model, count):
    body = dumps({"query": "q", "documents": ["a document"] * count})
    assert_error(post_raw(client, "/v1/rerank", body), 422, "documents", "at most 1000")
    tei = dumps({"query": "q", "texts": ["a text"] * count})
    assert_error(post_raw(client, "/rerank", tei), 422, "texts", "at most 1000")
    assert_rerank_works(client)
    assert_still_serving(client, chat_model)


def test_giant_rerank_strings(client, chat_model):
    documents = ["lorem ipsum " * 40_000] * 10  # 4.8 MB
    assert_error(post_raw(client, "/v2/rerank", dumps({"query": "q", "documents": documents})),
                 400, "documents", "LABS_MAX_EMBEDDING_CHARS")
    assert_error(post_raw(client, "/v1/rerank", dumps({"query": "q" * 4_000_000,
                                                      "documents": ["a"]})),
                 422, "query", "at most 8192")
    long_document = {"query": "q", "documents": ["short", "word " * 5000]}
    assert_error(post_raw(client, "/v1/rerank", dumps(long_document)), 400, "documents[1]")
    assert_rerank_works(client)
    assert_still_serving(client, chat_model)


@pytest.mark.parametrize("body", [
    {"query": "q", "documents": {"text": "not a list"}},
    {"query": 12, "documents": ["a"]},
    {"query": "q", "documents": [["nested"]]},
    {"query": "q", "documents": [{"text": 5}]},
    {"query": "q", "documents": ["a"], "top_n": -1},
    {"query": "q", "documents": ["a"], "model": ""},
])
def test_wrong_types_in_rerank(client, body):
    response = client.post("/v1/rerank", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_broken_unicode_is_refused_by_name(client, chat_model):
    cases = [("/v1/rerank", b'{"query": "\\ud800", "documents": ["a"]}', "query"),
             ("/rerank", b'{"query": "q", "texts": ["a", "\\udfff"]}', "texts.1"),
             ("/tokenize", b'{"content": "x\\u0000y"}', "content")]
    for path, body, param in cases:
        assert_error(post_raw(client, path, body), 422, param)
    messages = (b'{"model": "%s", "max_tokens": 4, "messages": [{"role": "user", '
                b'"content": "\\ud83d"}]}' % chat_model.encode())
    assert_anthropic_error(post_raw(client, "/v1/messages", messages), 422,
                           "messages.0.content")
    assert_anthropic_error(post_raw(client, "/v1/messages", b"\xff\xfe not utf-8"), 400,
                           "not valid UTF-8")
    assert_still_serving(client, chat_model)


def test_huge_tokenize_and_detokenize_bodies(client, chat_model):
    assert_error(post_raw(client, "/tokenize", dumps({"content": "lorem ipsum " * 350_000})),
                 400, "content", "LABS_MAX_PROMPT_CHARS")
    assert_error(post_raw(client, "/detokenize", dumps({"tokens": [1] * 1_000_000})),
                 400, "tokens", "LABS_MAX_PROMPT_CHARS")
    assert_error(post_raw(client, "/detokenize", dumps({"tokens": [1, 2**40]})), 400, "tokens")
    assert_error(post_raw(client, "/detokenize", dumps({"tokens": [1, 2**70]})), 422,
                 "tokens.1")
    many = {"messages": [{"role": "user", "content": "hi"}] * 20_000}
    assert_error(post_raw(client, "/tokenize", dumps(many)), 400, "messages",
                 "LABS_MAX_MESSAGES")
    assert client.post("/tokenize", json={"content": "still here"}).json()["count"] > 1
    assert_still_serving(client, chat_model)


def test_huge_and_malformed_messages_requests(client, chat_model):
    base = {"model": chat_model, "max_tokens": 4}
    assert_anthropic_error(post_raw(client, "/v1/messages", dumps({
        **base, "system": "lorem ipsum " * 350_000, "messages": [
            {"role": "user", "content": "hi"}]})), 400, "LABS_MAX_PROMPT_CHARS")
    assert_anthropic_error(post_raw(client, "/v1/messages", dumps({
        **base, "messages": [{"role": "user", "content": "hi"}] * 20_000})), 400,
        "LABS_MAX_MESSAGES")
    assert_anthropic_error(post_raw(client, "/v1/messages/count_tokens", dumps({
        "model": chat_model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"}] * 20_000}]})), 400, "content blocks")
    assert_anthropic_error(post_raw(client, "/v1/messages", dumps({
        **base, "messages": [{"role": "user", "content": 7}]})), 422, "messages.0.content")
    infinite = dumps({**base, "max_tokens": "@", "messages": [
        {"role": "user", "content": "hi"}]}).replace(b'"@"', b"1e999")
    assert_anthropic_error(post_raw(client, "/v1/messages", infinite), 422, "max_tokens",
                           "finite")
    good = client.post("/v1/messages", json={**base, "messages": [
        {"role": "user", "content": "Say hi."}]})
    assert good.status_code == 200 and good.json()["content"][0]["text"]
    assert_still_serving(client, chat_model)


def test_the_embedding_model_is_what_reranks_here(client):
    body = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).json()
    assert body["model"].startswith(EMBEDDING_MODEL)
