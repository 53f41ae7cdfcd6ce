"""HTTP layer of /tokenize and /detokenize on the scripted chat engine (one word = one token;
token i reads "w<i>"), in llama-server's and vLLM's shapes, and every error case."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.engines.chat.base import ChatEngine
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with


class SpecialTokenEngine(FakeChatEngine):
    """Adds a BOS token (999) to text when asked; pieces are the detokenized words."""

    def tokenize_content(self, text: str, add_special: bool) -> list[int]:
        return ([999] if add_special else []) + self.tokenize_text(text)


@pytest.fixture
def engine() -> FakeChatEngine:
    return SpecialTokenEngine(context_length=64)


@pytest.fixture
def client(engine) -> TestClient:
    return TestClient(create_app(Settings(), registry_with(engine)),
                      raise_server_exceptions=False)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_content_is_tokenized_without_bos_by_default_as_llama_server(client):
    body = ok(client.post("/tokenize", json={"content": "one two three"}))
    assert body == {"tokens": [0, 1, 2], "count": 3, "max_model_len": 64, "model": "fake-chat"}
    special = ok(client.post("/tokenize", json={"content": "one two", "add_special": True}))
    assert special["tokens"] == [999, 0, 1]


def test_prompt_gets_bos_by_default_as_vllm_unless_asked_not_to(client):
    assert ok(client.post("/tokenize", json={"prompt": "a b"}))["tokens"] == [999, 0, 1]
    off = ok(client.post("/tokenize", json={"prompt": "a b", "add_special_tokens": False}))
    assert off["tokens"] == [0, 1]


def test_messages_go_through_the_chat_template_as_chat_completions(client, engine):
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there friend"}]
    body = ok(client.post("/tokenize", json={"messages": messages}))
    assert body["count"] == 5
    assert [m.content for m in engine.last_messages] == ["be brief", "hello there friend"]


def test_with_pieces_gives_id_and_piece(client):
    body = ok(client.post("/tokenize", json={"content": "a b", "with_pieces": True}))
    assert body["tokens"] == [{"id": 0, "piece": "w0"}, {"id": 1, "piece": "w1"}]


def test_pieces_that_are_not_utf8_come_as_byte_lists():
    class ByteEngine(FakeChatEngine):
        def token_pieces(self, tokens: list[int]) -> list[bytes]:
            return [b"\xe2\x82" for _ in tokens]  # half of a UTF-8 character

    client = TestClient(create_app(Settings(), registry_with(ByteEngine())))
    body = ok(client.post("/tokenize", json={"content": "x", "with_pieces": True}))
    assert body["tokens"] == [{"id": 0, "piece": [0xE2, 0x82]}]


def test_detokenize_answers_in_both_shapes(client):
    body = ok(client.post("/detokenize", json={"tokens": [3, 4]}))
    assert body == {"content": "w3 w4", "prompt": "w3 w4", "model": "fake-chat"}
    assert ok(client.post("/detokenize", json={"tokens": []}))["content"] == ""


def test_the_model_is_chosen_by_name_and_unknown_is_404(client):
    assert ok(client.post("/tokenize", json={"model": "fake-chat", "content": "a"}))["count"] == 1
    response = client.post("/tokenize", json={"model": "nope", "content": "a"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"
    response = client.post("/detokenize", json={"model": "nope", "tokens": [1]})
    assert response.status_code == 404


@pytest.mark.parametrize("body", [
    {},
    {"content": "a", "prompt": "b"},
    {"content": "a", "messages": [{"role": "user", "content": "b"}]},
    {"messages": [{"role": "user", "content": "b"}], "add_special": True},
    {"content": "a", "add_special": True, "add_special_tokens": False},
    {"content": 5},
    {"content": ["a"]},
    {"content": "a", "with_pieces": "sometimes"},
    {"content": "a", "parse_special": False},
    {"messages": []},
    {"messages": [{"role": "robot", "content": "b"}]},
])
def test_bad_tokenize_requests_are_422(client, body):
    response = client.post("/tokenize", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("tokens", "status"), [
    ([1, -1], 400), ([1000], 400), (["a"], 422), ("1 2", 422), ([1.5], 422), (None, 422)])
def test_bad_detokenize_requests(client, tokens, status):
    response = client.post("/detokenize", json={"tokens": tokens})
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"].startswith("tokens")


def test_huge_inputs_are_refused_before_any_tokenizing(engine):
    calls = []

    class Counting(SpecialTokenEngine):
        def tokenize_content(self, text, add_special):
            calls.append(text)
            return super().tokenize_content(text, add_special)

    app = create_app(Settings(max_prompt_chars=1000, max_messages=4),
                     registry_with(Counting()))
    client = TestClient(app, raise_server_exceptions=False)
    for body, param in (({"content": "x" * 1001}, "content"), ({"prompt": "x" * 1001}, "prompt"),
                        ({"messages": [{"role": "user", "content": "x"}] * 5}, "messages"),
                        ({"messages": [{"role": "user", "content": "x" * 1001}]}, "messages")):
        response = client.post("/tokenize", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    too_many = client.post("/detokenize", json={"tokens": [1] * 251})
    assert too_many.status_code == 400 and "LABS_MAX_PROMPT_CHARS" in too_many.text
    assert calls == []


def test_the_default_pieces_of_an_engine_decode_token_by_token():
    assert ChatEngine.token_pieces(FakeChatEngine(), [5, 6]) == [b"w5", b"w6"]
