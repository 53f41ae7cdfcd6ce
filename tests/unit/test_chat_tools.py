"""Function calling through the HTTP layer, with a fake engine that answers a call's JSON."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with
from tests.openai_schema import assert_matches_openai

MODEL = "fake-chat"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CALL_JSON = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def client_answering(reply: str) -> tuple[TestClient, FakeChatEngine]:
    engine = FakeChatEngine(MODEL, reply=reply, context_length=4096)
    return TestClient(create_app(Settings(), registry_with(engine))), engine


def post(client, **body):
    response = client.post("/v1/chat/completions",
                           json={"model": MODEL, "messages": ASK, **body})
    assert response.status_code == 200, response.text
    return response.json()


def stream(client, **body) -> list[dict]:
    with client.stream("POST", "/v1/chat/completions", json={
            "model": MODEL, "messages": ASK, "stream": True, **body}) as response:
        raw = "".join(response.iter_text())
    return [json.loads(e[6:]) for e in raw.split("\n\n") if e and e != "data: [DONE]"]


def test_a_call_becomes_tool_calls_with_finish_reason_tool_calls():
    client, engine = client_answering(CALL_JSON)
    body = post(client, tools=[WEATHER])
    assert_matches_openai(body, "CreateChatCompletionResponse")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    # The model was told about the tool, and (tool_choice auto) decoding was not constrained.
    messages, params = engine.calls[-1]
    assert messages[0].role == "system" and "get_weather" in messages[0].content
    assert params.constraint is None


def test_plain_answers_stay_content_in_auto_mode():
    client, _ = client_answering("It is sunny.")
    body = post(client, tools=[WEATHER])
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "It is sunny.",
                                             "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"


def test_required_or_named_choice_constrains_decoding_to_a_call():
    client, engine = client_answering(CALL_JSON)
    post(client, tools=[WEATHER], tool_choice="required")
    constraint = engine.calls[-1][1].constraint
    assert constraint.kind == "json_schema" and constraint.param == "tool_choice"
    assert constraint.schema["properties"]["name"] == {"const": "get_weather"}
    post(client, tools=[WEATHER], tool_choice={"type": "function",
                                                "function": {"name": "get_weather"}})
    assert engine.calls[-1][1].constraint.schema["properties"]["arguments"] == \
        WEATHER["function"]["parameters"]


def test_tool_choice_none_ignores_the_tools():
    client, engine = client_answering(CALL_JSON)
    body = post(client, tools=[WEATHER], tool_choice="none")
    assert body["choices"][0]["message"]["content"] == CALL_JSON
    assert engine.calls[-1][0][0].role == "user"


def test_a_streamed_call_arrives_as_tool_call_chunks():
    client, _ = client_answering(CALL_JSON)
    chunks = stream(client, tools=[WEATHER])
    for chunk in chunks:
        assert_matches_openai(chunk, "CreateChatCompletionStreamResponse")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert not any("content" in d for d in deltas)  # the JSON was never sent as content
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_streamed_plain_answer_is_not_held_back():
    client, _ = client_answering("It is sunny today.")
    chunks = stream(client, tools=[WEATHER])
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert [c for c in contents if c] == ["It", " is", " sunny", " today."]


def test_tool_results_and_earlier_calls_are_accepted():
    client, engine = client_answering("It is 21 degrees in Paris.")
    messages = [*ASK,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}]
    response = client.post("/v1/chat/completions",
                           json={"model": MODEL, "messages": messages, "tools": [WEATHER]})
    assert response.status_code == 200, response.text
    seen = engine.calls[-1][0]
    assert seen[2].role == "assistant" and '"get_weather"' in seen[2].content
    assert seen[3].role == "user" and "21 C" in seen[3].content and "call_1" in seen[3].content


@pytest.mark.parametrize("change", [
    {"tool_choice": "required"},
    {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    {"tools": [WEATHER, WEATHER]},
    {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
    {"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
])
def test_inconsistent_tool_requests_are_422(change):
    client, _ = client_answering("x")
    response = client.post("/v1/chat/completions",
                           json={"model": MODEL, "messages": ASK, **change})
    assert response.status_code == 422, response.text
