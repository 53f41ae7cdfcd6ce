"""Legacy /v1/completions with a fake engine: shapes, n and batches of prompts, streaming."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with
from tests.openai_schema import assert_matches_openai

MODEL = "fake-chat"


@pytest.fixture
def engine() -> FakeChatEngine:
    return FakeChatEngine(MODEL)


@pytest.fixture
def client(engine) -> TestClient:
    return TestClient(create_app(Settings(), registry_with(engine)))


def complete(client, **body):
    body.setdefault("model", MODEL)
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_text_prompt_gives_a_text_completion(client):
    body = complete(client, prompt="Once upon a time")
    assert_matches_openai(body, "CreateCompletionResponse")
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "Hello there, how are you?"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9,
                             "prompt_tokens_details": {"cached_tokens": 0}}


def test_default_max_tokens_is_16_as_openai(client, engine):
    complete(client, prompt="x")
    assert engine.calls[-1][1].max_tokens == 16


def test_several_prompts_times_n_choices_are_indexed_prompt_major(client):
    body = complete(client, prompt=["one two", "three"], n=2, max_tokens=1)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == 3 and body["usage"]["completion_tokens"] == 4


def test_echo_prepends_the_prompt_and_token_prompts_are_accepted(client):
    body = complete(client, prompt="Say:", echo=True, max_tokens=1)
    assert body["choices"][0]["text"] == "Say:Hello"
    body = complete(client, prompt=[1, 2, 3], max_tokens=1)
    assert body["usage"]["prompt_tokens"] == 3


def test_legacy_logprobs_shape(client):
    body = complete(client, prompt="x", logprobs=2, max_tokens=2)
    assert_matches_openai(body, "CreateCompletionResponse")
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["Hello", "there,"]
    assert logprobs["text_offset"] == [0, 5]
    assert list(logprobs["top_logprobs"][0]) == ["alt0", "alt1"]


def test_streaming_sends_text_chunks_then_done(client):
    with client.stream("POST", "/v1/completions", json={
            "model": MODEL, "prompt": "x", "stream": True,
            "stream_options": {"include_usage": True}}) as response:
        raw = "".join(response.iter_text())
    events = [e[len("data: "):] for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks[:-1]:
        # OpenAI's schema has no null finish_reason, yet its streams send null until the end.
        if chunk["choices"][0]["finish_reason"] is not None:
            assert_matches_openai(chunk, "CreateCompletionResponse")
        assert set(chunk["choices"][0]) == {"index", "text", "finish_reason", "logprobs"}
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "Hello there, how are you?"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(("change", "field"), [
    ({"prompt": ""}, None), ({"prompt": []}, None), ({"suffix": "end"}, "suffix"),
    ({"best_of": 3}, None), ({"logprobs": 6}, "logprobs"), ({"n": 9}, "n"),
    ({"echo": True, "stream": True}, None), ({"max_tokens": 0}, "max_tokens"),
])
def test_invalid_requests_are_422(client, change, field):
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", **change})
    assert response.status_code == 422, response.text
    if field:
        assert field in response.json()["error"]["message"]


def test_unknown_model_is_404(client):
    response = client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert response.status_code == 404 and "nope" in response.json()["error"]["message"]


def test_a_single_stop_string_longer_than_four_characters_is_accepted(client, engine):
    body = complete(client, prompt="x", stop="there, how")
    assert engine.calls[-1][1].stop == ("there, how",)
    assert body["choices"][0]["text"] == "Hello "
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x",
                                                    "stop": ["a", "b", "c", "d", "e"]})
    assert response.status_code == 422 and response.json()["error"]["param"] == "stop"


def test_echo_with_token_ids_returns_the_detokenized_prompt(client):
    body = complete(client, prompt=[[7, 8], [9]], echo=True, max_tokens=1)
    assert [c["text"] for c in body["choices"]] == ["w7 w8Hello", "w9Hello"]


def test_echo_with_token_ids_on_an_engine_that_cannot_detokenize_is_a_422():
    class NoDetokenize(FakeChatEngine):
        detokenize = None

    client = TestClient(create_app(Settings(), registry_with(NoDetokenize(MODEL))))
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": [1, 2],
                                                    "echo": True})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "echo"
    assert "send the prompt as text" in response.json()["error"]["message"]


def test_echo_awaits_an_engine_whose_detokenize_is_a_coroutine():
    class RemoteLike(FakeChatEngine):
        async def detokenize(self, tokens: list[int]) -> str:  # as a proxy to a worker would
            return "+".join(map(str, tokens))

    client = TestClient(create_app(Settings(), registry_with(RemoteLike(MODEL))))
    body = complete(client, prompt=[4, 5], echo=True, max_tokens=1)
    assert body["choices"][0]["text"] == "4+5Hello"
