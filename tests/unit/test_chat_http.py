"""HTTP layer of /v1/chat/completions with a fake engine: shapes, streaming, parameters."""

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
def client(engine: FakeChatEngine) -> TestClient:
    return TestClient(create_app(Settings(), registry_with(engine)))


def chat(client: TestClient, **body) -> dict:
    body.setdefault("model", MODEL)
    body.setdefault("messages", [{"role": "user", "content": "Hello!"}])
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def stream_events(client: TestClient, **body) -> list:
    body.setdefault("model", MODEL)
    body.setdefault("messages", [{"role": "user", "content": "Hello!"}])
    body["stream"] = True
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    blocks = [b for b in raw.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks), raw
    return [b[len("data: "):] if b == "data: [DONE]" else json.loads(b[len("data: "):])
            for b in blocks]


def test_completion_has_the_spec_shape_and_validates_against_openai(client):
    body = chat(client)
    assert_matches_openai(body, "CreateChatCompletionResponse")
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello there, how are you?",
                                 "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6,
                             "prompt_tokens_details": {"cached_tokens": 0}}


def test_stream_is_role_then_content_then_finish_then_done(client):
    events = stream_events(client)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert_matches_openai(chunk, "CreateChatCompletionStreamResponse")
    assert len({c["id"] for c in chunks}) == 1
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    middle = chunks[1:-1]
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == \
        "Hello there, how are you?"
    assert len(middle) == 5  # one chunk per token


def test_stream_options_include_usage_adds_a_usage_chunk_before_done(client):
    events = stream_events(client, stream_options={"include_usage": True}, max_tokens=2)
    usage_chunk = events[-2]
    assert_matches_openai(usage_chunk, "CreateChatCompletionStreamResponse")
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 1, "completion_tokens": 2,
                                    "total_tokens": 3,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    assert events[-3]["choices"][0]["finish_reason"] == "length"


def test_defaults_come_from_settings(engine):
    settings = Settings(max_new_tokens=7, temperature=0.3, top_p=0.5)
    client = TestClient(create_app(settings, registry_with(engine)))
    chat(client)
    _, params = engine.calls[-1]
    assert (params.max_tokens, params.temperature, params.top_p) == (7, 0.3, 0.5)
    assert (params.top_k, params.stop, params.seed) == (0, (), None)


def test_spec_defaults_are_128_tokens_temperature_0_7_top_p_0_9(client, engine):
    chat(client)
    _, params = engine.calls[-1]
    assert (params.max_tokens, params.temperature, params.top_p) == (128, 0.7, 0.9)


def test_every_spec_parameter_reaches_the_engine(client, engine):
    chat(client, max_tokens=3, temperature=0.0, top_p=0.8, top_k=5, stop="x",
         frequency_penalty=1.5, presence_penalty=-1.0, seed=42)
    messages, params = engine.calls[-1]
    assert messages[0].role == "user" and messages[0].content == "Hello!"
    assert params.max_tokens == 3 and params.temperature == 0.0 and params.top_p == 0.8
    assert params.top_k == 5 and params.stop == ("x",) and params.seed == 42
    assert params.frequency_penalty == 1.5 and params.presence_penalty == -1.0


def test_max_completion_tokens_is_an_alias(client, engine):
    body = chat(client, max_completion_tokens=2)
    assert engine.calls[-1][1].max_tokens == 2
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_stop_sequence_cuts_the_reply(client):
    body = chat(client, stop=[", how", "zzz"])
    assert body["choices"][0]["message"]["content"] == "Hello there"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_content_parts_and_developer_role_are_accepted(client, engine):
    chat(client, messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text",
                                                                         "text": "you"}]},
    ])
    messages, _ = engine.calls[-1]
    assert [(m.role, m.content) for m in messages] == [("system", "Be brief."),
                                                       ("user", "Hi you")]


def test_n_choices_have_their_index_and_usage_counts_the_prompt_once(client):
    body = chat(client, n=3, max_tokens=2)
    assert_matches_openai(body, "CreateChatCompletionResponse")
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7,
                             "prompt_tokens_details": {"cached_tokens": 0}}


def test_seeded_choices_get_distinct_repeatable_seeds(client, engine):
    chat(client, n=3, seed=10)
    assert sorted(params.seed for _, params in engine.calls[-3:]) == [10, 11, 12]


def test_streamed_n_choices_each_get_role_content_and_finish(client):
    events = stream_events(client, n=2, stream_options={"include_usage": True})
    chunks = events[:-1]
    for chunk in chunks:
        assert_matches_openai(chunk, "CreateChatCompletionStreamResponse")
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"] and
                c["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant"}
        assert mine[-1]["finish_reason"] == "stop"
        assert "".join(c["delta"].get("content", "") for c in mine) == \
            "Hello there, how are you?"
    assert chunks[-1]["usage"]["completion_tokens"] == 10


def test_logprobs_are_returned_in_openai_shape(client, engine):
    body = chat(client, logprobs=True, top_logprobs=2, max_tokens=2)
    assert_matches_openai(body, "CreateChatCompletionResponse")
    assert engine.calls[-1][1].logprobs == 2
    content = body["choices"][0]["logprobs"]["content"]
    assert [entry["token"] for entry in content] == ["Hello", "there,"]
    assert content[0]["bytes"] == list(b"Hello")
    assert [alt["token"] for alt in content[0]["top_logprobs"]] == ["alt0", "alt1"]
    events = stream_events(client, logprobs=True, max_tokens=2)
    for chunk in events[:-1]:
        assert_matches_openai(chunk, "CreateChatCompletionStreamResponse")
    streamed = [e for c in events[1:-2] for e in c["choices"][0]["logprobs"]["content"]]
    assert [e["token"] for e in streamed] == ["Hello", "there,"]


def test_logit_bias_and_response_format_reach_the_engine(client, engine):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    chat(client, logit_bias={"7": -100, "12": 5.5},
         response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    params = engine.calls[-1][1]
    assert params.logit_bias == ((7, -100.0), (12, 5.5))
    assert params.constraint.kind == "json_schema" and params.constraint.schema == schema
    chat(client, response_format={"type": "json_object"})
    assert engine.calls[-1][1].constraint.kind == "json_object"
    chat(client, response_format={"type": "text"})
    assert engine.calls[-1][1].constraint is None
