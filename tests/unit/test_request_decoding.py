"""Strict request decoding (labs_api.api.decoding) on every JSON endpoint, with fake engines:
bodies that are not UTF-8 JSON, non-finite or out-of-range numbers, lone surrogates and NUL
are refused with 4xx bodies that name the field; what is valid still works."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from labs_api.api.decoding import first_problem
from labs_api.app import create_app
from labs_api.errors import jsonable
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with

CHAT = "fake-chat"
JSON = {"Content-Type": "application/json"}
HELLO = [{"role": "user", "content": "hi"}]

#: A valid body for each endpoint that needs no speech or embedding engine to get past decoding.
ENDPOINTS = {
    "/v1/chat/completions": {"model": CHAT, "messages": HELLO},
    "/v1/completions": {"model": CHAT, "prompt": "hi"},
    "/v1/embeddings": {"model": "x", "input": "hi"},
    "/v1/similarities": {"sentences": ["hi"]},
    "/v1/tts": {"text": "hi"},
    "/v1/audio/speech": {"model": "tts-1", "input": "hi", "voice": "alloy"},
}


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings(), registry_with(FakeChatEngine(CHAT))),
                      raise_server_exceptions=False)


def post_raw(client: TestClient, path: str, body: bytes, content_type: str = "application/json"):
    return client.post(path, content=body, headers={"Content-Type": content_type})


def assert_refused(response, status: int, param: str | None, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    for word in words:
        assert word in error["message"], error["message"]
    return response.json()


def test_a_lone_surrogate_in_the_model_id_is_a_422_naming_model(client):
    body = b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}'
    data = assert_refused(post_raw(client, "/v1/chat/completions", body), 422, "model",
                          "lone UTF-16 surrogate")
    assert data["detail"][0]["loc"] == ["body", "model"]


@pytest.mark.parametrize(("path", "field", "loc"), [
    ("/v1/chat/completions", "messages", "messages.0.content"),
    ("/v1/completions", "prompt", "prompt"),
    ("/v1/embeddings", "input", "input"),
    ("/v1/similarities", "sentences", "sentences.0"),
    ("/v1/tts", "text", "text"),
    ("/v1/audio/speech", "input", "input"),
])
@pytest.mark.parametrize(("escape", "words"), [
    ("\\udfff", "lone UTF-16 surrogate"), ("\\ud83d", "lone UTF-16 surrogate"),
    ("\\u0000", "NUL"),
])
def test_surrogates_and_nul_in_any_text_are_refused_naming_the_field(
        client, path, field, loc, escape, words):
    body = dict(ENDPOINTS[path])
    text = f"a {escape} b"
    body[field] = [text] if field in ("sentences",) else (
        [{"role": "user", "content": text}] if field == "messages" else text)
    raw = json.dumps(body).replace(json.dumps(text), f'"{text}"').encode()
    assert_refused(post_raw(client, path, raw), 422, loc, words)


def test_a_surrogate_pair_is_a_valid_character(client):
    raw = b'{"model": "fake-chat", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    response = post_raw(client, "/v1/chat/completions", raw)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello there, how are you?"


@pytest.mark.parametrize(("field", "literal"), [
    ("temperature", "NaN"), ("temperature", "Infinity"), ("top_p", "-Infinity"),
    ("max_tokens", "1e999"), ("presence_penalty", "-1e400"),
    ("max_tokens", "123456789012345678901234567890"), ("seed", "-9223372036854775809"),
])
def test_non_finite_and_out_of_range_numbers_are_a_422_naming_the_field(client, field, literal):
    raw = (b'{"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "'
           + field.encode() + b'": ' + literal.encode() + b"}")
    data = assert_refused(post_raw(client, "/v1/chat/completions", raw), 422, field)
    assert data["detail"][0]["loc"] == ["body", field]


def test_speed_nan_on_speech_is_a_422(client):
    raw = b'{"model": "tts-1", "input": "hi", "voice": "alloy", "speed": NaN}'
    assert_refused(post_raw(client, "/v1/audio/speech", raw), 422, "speed", "finite")


def test_the_largest_int64_is_still_a_number(client):
    response = client.post("/v1/chat/completions", json={
        "model": CHAT, "messages": HELLO, "seed": 2**63 - 1, "max_tokens": 3})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_a_body_that_is_not_utf8_is_a_4xx_never_a_500(client, content_type):
    raw = '{"model": "fake-chat", "prompt": "caf\xe9"}'.encode("latin-1")
    response = post_raw(client, "/v1/completions", raw, content_type)
    if content_type == "text/plain":
        assert_refused(response, 415, None, "application/json")
    else:
        data = assert_refused(response, 400, None, "not valid UTF-8", "byte 37")
        assert data["error"]["code"] == "invalid_encoding"


def test_a_json_body_sent_as_text_plain_is_a_415_naming_the_content_type(client):
    response = post_raw(client, "/v1/chat/completions",
                        json.dumps(ENDPOINTS["/v1/chat/completions"]).encode(), "text/plain")
    data = assert_refused(response, 415, None, "text/plain")
    assert data["error"]["code"] == "unsupported_media_type"


def test_json_with_a_charset_and_vendor_json_types_are_accepted(client):
    body = json.dumps({"model": CHAT, "prompt": "hi", "max_tokens": 1}).encode()
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = post_raw(client, "/v1/completions", body, content_type)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == "Hello"


def test_malformed_and_over_nested_json_are_400s(client):
    data = assert_refused(post_raw(client, "/v1/completions", b'{"model": '), 400, None,
                          "Malformed JSON")
    assert data["error"]["message"].startswith("Malformed JSON body")
    assert_refused(post_raw(client, "/v1/completions", b"[" * 50_000 + b"]" * 50_000), 400,
                   None, "nested too deeply")


def test_a_surrogate_in_a_key_is_refused_and_the_message_is_printable(client):
    raw = b'{"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], ' \
          b'"logit_bias": {"\\ud800": 1}}'
    response = post_raw(client, "/v1/chat/completions", raw)
    assert_refused(response, 422, "logit_bias.\\ud800", "key must be valid Unicode")
    response.content.decode("ascii")  # rendered with escapes: always encodable


def test_the_first_problem_is_the_first_in_document_order():
    value = {"a": ["ok", "\x00"], "b": "\ud800"}
    assert first_problem(value) == (("a", 1), "must not contain the NUL character (\\u0000)")


def test_validation_errors_echo_bytes_nan_and_surrogates_as_plain_json():
    echoed = jsonable({"input": b"\xff\xfe", "n": float("nan"), "s": "\ud800", "k": (1, 2)})
    assert echoed == {"input": "\\xff\\xfe", "n": "nan", "s": "\\ud800", "k": [1, 2]}
    json.dumps(echoed, allow_nan=False).encode("utf-8")


def test_a_huge_invalid_body_is_echoed_only_in_part(client):
    # A model-level error quotes the whole body; the echo is cut to a few kilobytes.
    messages = [{"role": "user", "content": ""}] * 3000
    response = client.post("/v1/chat/completions", json={"model": CHAT, "messages": messages})
    assert response.status_code == 422
    assert "messages must contain some text" in response.json()["error"]["message"]
    assert len(response.content) < 20_000


def test_models_refuse_non_finite_numbers_in_process_too():
    from pydantic import ValidationError

    from labs_api.api.chat.protocol import ChatCompletionRequest

    with pytest.raises(ValidationError, match="finite number"):
        ChatCompletionRequest(model=CHAT, messages=HELLO, temperature=float("nan"))


def test_large_bodies_are_decoded_in_chunks_with_the_right_offset():
    from labs_api.api.decoding import _utf8

    text = "é☕" * 300_000
    assert _utf8(text.encode(), yielding=True) == text
    for body, offset in [(("é" * 200_000).encode() + b"\xff", 400_000),
                         (b"a" * 300_000 + b"\xc3", 300_000)]:
        with pytest.raises(UnicodeDecodeError) as caught:
            _utf8(body, yielding=True)
        assert caught.value.start == offset


def test_a_body_of_too_many_objects_stops_the_parse(client):
    from labs_api.api.decoding import MAX_JSON_OBJECTS

    body = json.dumps({"model": CHAT, "messages": [{"role": "user", "content": "w"}]
                       * (MAX_JSON_OBJECTS + 1)}).encode()
    data = assert_refused(post_raw(client, "/v1/chat/completions", body), 400, None,
                          f"more than {MAX_JSON_OBJECTS} JSON objects")
    assert data["error"]["code"] == "limit_exceeded"
    small = json.dumps([{}] * (MAX_JSON_OBJECTS + 1), separators=(",", ":")).encode()
    assert len(small) < 256 * 1024  # decoded inline, on the event loop
    assert_refused(post_raw(client, "/v1/completions", small), 400, None, "JSON objects")
