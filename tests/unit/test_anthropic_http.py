"""HTTP layer of Anthropic's Messages API on the scripted chat engine: the translation onto
the chat path, the event stream, tools, count_tokens, x-api-key and Anthropic's error shape on
every error."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with

CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
ASK = [{"role": "user", "content": "Hello there"}]


def make(reply: str = "Hi, how are you?", **settings) -> tuple[TestClient, FakeChatEngine]:
    engine = FakeChatEngine(reply=reply, context_length=512)
    app = create_app(Settings(**settings), registry_with(engine))
    return TestClient(app, raise_server_exceptions=False), engine


def events(response) -> list[tuple[str, dict]]:
    """(event name, data) of each SSE event, checking each name matches its data's type."""
    out = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        out.append((lines["event"], data))
    return out


def assert_anthropic_error(response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == error_type
    return body["error"]["message"]


def test_create_returns_an_anthropic_message():
    client, engine = make()
    response = client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 50, "system": "Be brief.", "messages": ASK,
        "temperature": 0.2, "top_p": 0.5, "top_k": 7, "metadata": {"user_id": "u1"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["id"].startswith("msg_") and body["model"] == "fake-chat"
    assert body["content"] == [{"type": "text", "text": "Hi, how are you?"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"] == {"input_tokens": 4, "output_tokens": 4,
                             "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    messages, params = engine.calls[-1]
    assert [(m.role, m.content) for m in messages] == [("system", "Be brief."),
                                                       ("user", "Hello there")]
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (
        50, 0.2, 0.5, 7)


def test_max_tokens_is_reported_as_the_stop_reason_and_stop_sequences_reach_the_engine():
    client, engine = make()
    body = client.post("/v1/messages", json={"model": "fake-chat", "max_tokens": 2,
                                             "messages": ASK,
                                             "stop_sequences": ["END", "STOP"]}).json()
    assert body["stop_reason"] == "max_tokens" and body["usage"]["output_tokens"] == 2
    assert engine.calls[-1][1].stop == ("END", "STOP")


def test_system_blocks_and_text_blocks_with_cache_control_are_joined():
    client, engine = make()
    response = client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 5,
        "system": [{"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Two."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a "},
                                                  {"type": "text", "text": "b"}]}]})
    assert response.status_code == 200, response.text
    assert [m.content for m in engine.calls[-1][0]] == ["One.\nTwo.", "a b"]


def test_stream_sends_anthropics_event_sequence():
    client, _ = make(reply="Hi there friend")
    response = client.post("/v1/messages", json={"model": "fake-chat", "max_tokens": 50,
                                                 "messages": ASK, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    seen = events(response)
    names = [name for name, _ in seen]
    assert names[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = seen[0][1]["message"]
    assert start["content"] == [] and start["usage"]["input_tokens"] == 2
    text = "".join(d["delta"]["text"] for n, d in seen if n == "content_block_delta")
    assert text == "Hi there friend"
    assert {d["index"] for n, d in seen if n.startswith("content_block")} == {0}
    delta = seen[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3 and delta["usage"]["input_tokens"] == 2


def test_forced_tool_call_comes_back_as_a_tool_use_block():
    client, engine = make(reply=CALL)
    body = client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 50, "messages": ASK, "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"}}).json()
    assert body["stop_reason"] == "tool_use"
    (block,) = body["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert block["name"] == "get_weather" and block["input"] == {"city": "Paris"}
    params = engine.calls[-1][1]
    assert params.constraint is not None and params.constraint.param == "tool_choice"
    assert "get_weather" in engine.calls[-1][0][0].content  # described in the system turn


@pytest.mark.parametrize(("choice", "forced"), [({"type": "any"}, True), ({"type": "auto"}, False),
                                                ({"type": "none"}, False)])
def test_tool_choice_types_map_onto_the_chat_path(choice, forced):
    client, engine = make(reply=CALL)
    body = client.post("/v1/messages", json={"model": "fake-chat", "max_tokens": 50,
                                             "messages": ASK, "tools": [WEATHER],
                                             "tool_choice": choice}).json()
    assert (engine.calls[-1][1].constraint is not None) is forced
    assert body["stop_reason"] == ("end_turn" if choice["type"] == "none" else "tool_use")


def test_streamed_tool_use_is_an_input_json_delta():
    client, _ = make(reply=CALL)
    response = client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 50, "messages": ASK, "tools": [WEATHER],
        "tool_choice": {"type": "any"}, "stream": True})
    seen = events(response)
    start = next(d for n, d in seen if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "get_weather"
    delta = next(d for n, d in seen if n == "content_block_delta")
    assert delta["delta"]["type"] == "input_json_delta"
    assert json.loads(delta["delta"]["partial_json"]) == {"city": "Paris"}
    assert seen[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_use_and_tool_result_blocks_become_the_chat_paths_tool_turns():
    client, engine = make()
    response = client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 20, "tools": [WEATHER], "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C, sunny"},
                {"type": "text", "text": "Thanks!"}]}]})
    assert response.status_code == 200, response.text
    turns = [(m.role, m.content) for m in engine.calls[-1][0]][1:]  # after the tools note
    assert turns[0] == ("user", "Weather in Paris?")
    assert turns[1][0] == "assistant" and "Let me look." in turns[1][1]
    assert json.loads(turns[1][1].split("\n", 1)[1]) == {"name": "get_weather",
                                                         "arguments": {"city": "Paris"}}
    assert turns[2] == ("user", "Result of tool call toolu_1: 18 C, sunny")
    assert turns[3] == ("user", "Thanks!")


def test_an_error_tool_result_says_so():
    client, engine = make()
    client.post("/v1/messages", json={"model": "fake-chat", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "is_error": True,
                                      "content": [{"type": "text", "text": "no city"}]}]}]})
    assert engine.calls[-1][0][-1].content == "Result of tool call t: Error: no city"


def test_output_config_format_is_chats_json_schema_response_format():
    client, engine = make(reply='{"city": "Paris"}')
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]}
    body = client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 20, "messages": ASK,
        "output_config": {"format": {"type": "json_schema", "schema": schema}}}).json()
    assert json.loads(body["content"][0]["text"]) == {"city": "Paris"}
    constraint = engine.calls[-1][1].constraint
    assert constraint.kind == "json_schema" and constraint.schema == schema
    effort = client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 20, "messages": ASK,
        "output_config": {"effort": "high"}})
    assert "effort" in assert_anthropic_error(effort, 422, "invalid_request_error")
    deep: dict = {"type": "string"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    nested = client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 20, "messages": ASK,
        "output_config": {"format": {"type": "json_schema", "schema": deep}}})
    assert "LABS_MAX_SCHEMA_DEPTH" in assert_anthropic_error(nested, 400,
                                                             "invalid_request_error")


def test_count_tokens_counts_the_prompt_as_the_chat_path_would():
    client, engine = make()
    body = {"model": "fake-chat", "system": "be kind", "messages": ASK}
    counted = client.post("/v1/messages/count_tokens", json=body)
    assert counted.status_code == 200 and counted.json() == {"input_tokens": 4}
    with_tools = client.post("/v1/messages/count_tokens", json={**body, "tools": [WEATHER]})
    assert with_tools.json()["input_tokens"] > 4
    assert engine.calls == []  # nothing generated


@pytest.mark.parametrize(("body", "where"), [
    ({"model": "fake-chat", "messages": ASK}, "max_tokens"),
    ({"model": "fake-chat", "max_tokens": 0, "messages": ASK}, "max_tokens"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": ASK, "temperature": 1.5},
     "temperature"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": ASK, "stop_sequences": ["a"] * 5},
     "stop_sequences"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": ASK, "stop_sequences": [""]},
     "stop_sequences"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "messages"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}]}, "messages"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": ASK, "thinking": {"type": "enabled"}},
     "thinking"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": ASK,
      "tools": [{"name": "bad name!", "input_schema": {}}]}, "tools"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": ASK, "tool_choice": {"type": "sometimes"}},
     "tool_choice"),
    ({"model": "fake-chat", "max_tokens": "many", "messages": ASK}, "max_tokens"),
    ({"model": "fake-chat", "max_tokens": 5, "messages": ASK, "tool_choice": {"type": "any"}},
     "tool_choice needs tools"),
])
def test_bad_requests_are_4xx_in_anthropics_shape_naming_the_field(body, where):
    client, engine = make()
    message = assert_anthropic_error(client.post("/v1/messages", json=body), 422,
                                     "invalid_request_error")
    assert where in message
    assert engine.calls == []


def test_what_the_chat_path_refuses_is_a_400_in_anthropics_shape():
    client, _ = make()
    message = assert_anthropic_error(client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 5, "messages": ASK,
        "tool_choice": {"type": "tool", "name": "missing"}, "tools": [WEATHER]}), 400,
        "invalid_request_error")
    assert "tool_choice" in message


def test_unknown_model_prompt_too_long_and_bad_json_are_anthropic_errors():
    client, _ = make()
    assert "claude" in assert_anthropic_error(client.post("/v1/messages", json={
        "model": "claude-sonnet-4-5", "max_tokens": 5, "messages": ASK}), 404, "not_found_error")
    long = [{"role": "user", "content": "word " * 600}]
    assert_anthropic_error(client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 5, "messages": long}), 400, "invalid_request_error")
    assert_anthropic_error(client.post("/v1/messages", content=b"{not json",
                                       headers={"content-type": "application/json"}),
                           400, "invalid_request_error")
    assert_anthropic_error(client.post("/v1/messages", content=b"{}",
                                       headers={"content-type": "text/plain"}),
                           415, "invalid_request_error")
    assert_anthropic_error(client.post("/v1/messages/count_tokens", json={"model": "fake-chat"}),
                           422, "invalid_request_error")


def test_hostile_sizes_are_refused_before_any_work():
    client, engine = make(max_messages=8, max_prompt_chars=2000, max_tools=2)
    many = [{"role": "user", "content": "x"}] * 9
    blocks = [{"role": "user", "content": [{"type": "text", "text": "x"}] * 9}]
    huge_input = [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {"k": "x" * 3000}}]}, *ASK]
    for messages in (many, blocks, huge_input):
        message = assert_anthropic_error(client.post("/v1/messages", json={
            "model": "fake-chat", "max_tokens": 5, "messages": messages}), 400,
            "invalid_request_error")
        assert "LABS_MAX" in message
    tools = [dict(WEATHER, name=f"t{i}") for i in range(3)]
    assert_anthropic_error(client.post("/v1/messages/count_tokens", json={
        "model": "fake-chat", "messages": ASK, "tools": tools}), 400, "invalid_request_error")
    assert_anthropic_error(client.post("/v1/messages", json={
        "model": "fake-chat", "max_tokens": 5, "messages": ASK, "system": "s" * 2001}), 400,
        "invalid_request_error")
    assert engine.calls == []


def test_x_api_key_is_accepted_and_a_missing_key_is_an_authentication_error():
    client, _ = make(api_key="secret-key")
    body = {"model": "fake-chat", "max_tokens": 5, "messages": ASK}
    assert_anthropic_error(client.post("/v1/messages", json=body), 401, "authentication_error")
    assert_anthropic_error(client.post("/v1/messages", json=body,
                                       headers={"x-api-key": "wrong"}), 401,
                           "authentication_error")
    assert client.post("/v1/messages", json=body,
                       headers={"x-api-key": "secret-key"}).status_code == 200
    assert client.post("/v1/messages", json=body,
                       headers={"authorization": "Bearer secret-key"}).status_code == 200
    # The OpenAI routes take x-api-key too, and keep their own error shape.
    models = client.get("/v1/models", headers={"x-api-key": "secret-key"})
    assert models.status_code == 200
    assert client.get("/v1/models").json()["error"]["code"] == "invalid_api_key"


def test_body_size_and_rate_limit_refusals_are_anthropic_errors_too():
    client, _ = make(max_body_bytes=1000, rate_limit="2/minute")
    big = {"model": "fake-chat", "max_tokens": 5, "messages": [{"role": "user",
                                                                "content": "x" * 2000}]}
    assert_anthropic_error(client.post("/v1/messages", json=big), 413, "request_too_large")
    body = {"model": "fake-chat", "max_tokens": 5, "messages": ASK}
    statuses = [client.post("/v1/messages", json=body).status_code for _ in range(3)]
    assert 429 in statuses
    limited = client.post("/v1/messages", json=body)
    assert_anthropic_error(limited, 429, "rate_limit_error")
    assert "retry-after" in limited.headers


def test_a_loading_model_is_an_overloaded_error_with_retry_after():
    engine = FakeChatEngine()
    client = TestClient(create_app(Settings(), registry_with(
        engine, states={"fake-chat": "loading"})), raise_server_exceptions=False)
    response = client.post("/v1/messages", json={"model": "fake-chat", "max_tokens": 5,
                                                 "messages": ASK, "stream": True})
    assert_anthropic_error(response, 503, "overloaded_error")
    assert response.headers["retry-after"] == "2"


def test_an_engine_failure_mid_stream_is_an_error_event():
    engine = FakeChatEngine(reply="a b c d")
    original = engine._run

    async def broken(prompt_tokens, params):
        async for chunk in original(prompt_tokens, params):
            yield chunk
            raise RuntimeError("the engine broke")

    engine._run = broken  # type: ignore[method-assign]
    client = TestClient(create_app(Settings(), registry_with(engine)),
                        raise_server_exceptions=False)
    response = client.post("/v1/messages", json={"model": "fake-chat", "max_tokens": 5,
                                                 "messages": ASK, "stream": True})
    assert response.status_code == 200
    name, data = events(response)[-1]
    assert name == "error" and data["error"]["type"] == "api_error"
    assert "RuntimeError" in data["error"]["message"]


def test_closing_the_event_stream_early_closes_the_chat_stream():
    """A client that leaves mid-stream must stop the generation: the chat path's chunk stream
    is closed with Anthropic's, not left to the garbage collector."""
    import asyncio

    from labs_api.api.anthropic.streaming import message_events

    closed = []

    async def chunks():
        try:
            for word in ("a", "b", "c"):
                yield {"choices": [{"index": 0, "delta": {"content": word},
                                    "finish_reason": None}]}
        finally:
            closed.append(True)

    async def run() -> list[str]:
        source = chunks()  # held here, so only an explicit close can end it now
        events = message_events(source, message_id="msg_1", model="m", prompt_tokens=1)
        seen = [(await anext(events))["type"] for _ in range(4)]
        await events.aclose()
        assert closed == [True]
        return seen

    assert asyncio.run(run()) == ["message_start", "ping", "content_block_start",
                                  "content_block_delta"]
    assert closed == [True]


def test_a_client_that_leaves_mid_stream_cancels_the_generation():
    engine = FakeChatEngine(reply=" ".join(["word"] * 200), delay=0.01, context_length=512)
    client = TestClient(create_app(Settings(), registry_with(engine)))
    with client.stream("POST", "/v1/messages", json={
            "model": "fake-chat", "max_tokens": 300, "messages": ASK, "stream": True}) as response:
        for line in response.iter_lines():
            if "text_delta" in line:
                break
    for _ in range(500):  # the cancellation reaches the engine's task within a moment
        if engine.cancelled:
            break
        time.sleep(0.01)
    assert engine.cancelled == 1 and engine.finished == 0
