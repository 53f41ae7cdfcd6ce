"""HTTP layer of /v1/responses with a fake engine: shapes, events, store, refusals."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.engines.chat.base import GenerationChunk
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with
from tests.openai_schema import _components, assert_matches_openai

MODEL = "fake-chat"
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}


class CachingEngine(FakeChatEngine):
    """Reports 3 cached prompt tokens on its final chunk, as llama.cpp's slots do."""

    async def _run(self, prompt_tokens, params):
        async for chunk in super()._run(prompt_tokens, params):
            if chunk.finish_reason is not None:
                chunk = GenerationChunk(chunk.text, chunk.finish_reason, chunk.prompt_tokens,
                                        chunk.completion_tokens, cached_tokens=3)
            yield chunk


@pytest.fixture
def engine() -> FakeChatEngine:
    return CachingEngine(MODEL, context_length=512)


def make_client(engine: FakeChatEngine, **settings) -> TestClient:
    settings.setdefault("data_dir", ":memory:")
    return TestClient(create_app(Settings(**settings), registry_with(engine)))


@pytest.fixture
def client(engine: FakeChatEngine) -> TestClient:
    with make_client(engine) as client:
        yield client


def create(client: TestClient, status: int = 200, **body) -> dict:
    body.setdefault("model", MODEL)
    body.setdefault("input", "Hello!")
    response = client.post("/v1/responses", json=body)
    assert response.status_code == status, response.text
    return response.json()


def stream(client: TestClient, **body) -> list[dict]:
    body.setdefault("model", MODEL)
    body.setdefault("input", "Hello!")
    body["stream"] = True
    with client.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    events = []
    for block in (b for b in raw.split("\n\n") if b):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        event = json.loads(data_line[len("data: "):])
        assert event["type"] == name_line[len("event: "):]
        events.append(event)
    assert "[DONE]" not in raw
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert_matches_event(event)
    return events


def assert_matches_event(event: dict) -> None:
    """Against the schema of its own type (readable errors), then ``ResponseStreamEvent``."""
    schemas = _components()["schemas"]
    by_type = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        by_type[schemas[name]["properties"]["type"]["enum"][0]] = name
    assert_matches_openai(event, by_type[event["type"]])
    assert_matches_openai(event, "ResponseStreamEvent")


def test_plain_response_validates_and_carries_text_and_usage(client):
    body = create(client, instructions="Be brief.", metadata={"topic": "greeting"})
    assert_matches_openai(body, "Response")
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] == "completed" and body["error"] is None
    assert body["model"] == MODEL
    [item] = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"][0]["text"] == "Hello there, how are you?"
    assert body["output_text"] == "Hello there, how are you?"
    assert body["usage"]["output_tokens"] == 5
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + 5
    assert body["metadata"] == {"topic": "greeting"} and body["instructions"] == "Be brief."


def test_instructions_become_the_system_turn(client, engine):
    create(client, instructions="Be brief.", input=[
        {"role": "developer", "content": "Use French."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}])
    messages = engine.calls[-1][0]
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."), ("system", "Use French."), ("user", "Hi")]


def test_max_output_tokens_cut_is_incomplete(client):
    body = create(client, max_output_tokens=2)
    assert_matches_openai(body, "Response")
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert body["output_text"] == "Hello there,"


def test_stream_sends_openai_events_in_order(client):
    events = stream(client)
    types = [e["type"] for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(e["delta"] for e in deltas) == "Hello there, how are you?"
    item_id = events[2]["item"]["id"]
    assert all(e["item_id"] == item_id for e in deltas)
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello there, how are you?"
    assert final["usage"]["output_tokens"] == 5
    assert events[0]["response"]["status"] == "in_progress"


def test_stream_cut_by_max_output_tokens_ends_incomplete(client):
    events = stream(client, max_output_tokens=1)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_function_call_output_item_and_events():
    engine = FakeChatEngine(MODEL, reply=CALL, context_length=512)
    with make_client(engine) as client:
        body = create(client, tools=[WEATHER_TOOL, {"type": "web_search"}])
        assert_matches_openai(body, "Response")
        [call] = body["output"]
        assert call["type"] == "function_call" and call["name"] == "get_weather"
        assert json.loads(call["arguments"]) == {"city": "Paris"}
        assert call["call_id"].startswith("call_")
        system = engine.calls[-1][0][0]
        assert system.role == "system" and "get_weather" in system.content
        assert "web_search" not in system.content  # hosted tools are not offered
        events = stream(client, tools=[WEATHER_TOOL], tool_choice="required")
        types = [e["type"] for e in events]
        assert types[2:] == ["response.output_item.added",
                             "response.function_call_arguments.delta",
                             "response.function_call_arguments.done",
                             "response.output_item.done", "response.completed"]
        assert engine.calls[-1][1].constraint is not None  # required: grammar-constrained
        done = events[-1]["response"]["output"][0]
        assert done["type"] == "function_call" and done["status"] == "completed"


def test_tool_output_round_trip_reaches_the_model(client, engine):
    create(client, tools=[WEATHER_TOOL], input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}])
    contents = [m.content for m in engine.calls[-1][0]]
    assert any('"get_weather"' in c and "Paris" in c for c in contents[2:])
    assert "Result of tool call call_1: sunny, 21 C" in contents[-1]


def test_previous_response_id_continues_the_conversation(client, engine):
    first = create(client, instructions="First rules.", input="My name is Ada.")
    create(client, input="What is my name?", previous_response_id=first["id"])
    messages = [(m.role, m.content) for m in engine.calls[-1][0]]
    assert messages == [("user", "My name is Ada."),
                        ("assistant", "Hello there, how are you?"),
                        ("user", "What is my name?")]  # instructions are not carried over


def test_retrieve_delete_and_input_items(client):
    body = create(client, input=[{"role": "user", "content": f"part {i}"} for i in range(3)])
    got = client.get(f"/v1/responses/{body['id']}")
    assert got.status_code == 200 and got.json() == body
    items = client.get(f"/v1/responses/{body['id']}/input_items").json()
    assert_matches_openai(items, "ResponseItemList")
    assert [i["content"][0]["text"] for i in items["data"]] == ["part 2", "part 1", "part 0"]
    page = client.get(f"/v1/responses/{body['id']}/input_items",
                      params={"order": "asc", "limit": 2}).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["part 0", "part 1"]
    assert page["has_more"] is True
    rest = client.get(f"/v1/responses/{body['id']}/input_items",
                      params={"order": "asc", "after": page["last_id"]}).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["part 2"]
    assert rest["has_more"] is False
    deleted = client.delete(f"/v1/responses/{body['id']}")
    assert deleted.json() == {"id": body["id"], "object": "response", "deleted": True}
    assert client.get(f"/v1/responses/{body['id']}").status_code == 404
    assert client.delete(f"/v1/responses/{body['id']}").status_code == 404


def test_store_false_is_not_kept(client):
    body = create(client, store=False)
    missing = client.get(f"/v1/responses/{body['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "response_id"
    refused = create(client, 404, input="again", previous_response_id=body["id"])
    assert refused["error"]["param"] == "previous_response_id"


def test_streamed_response_is_stored(client):
    events = stream(client)
    final = events[-1]["response"]
    assert client.get(f"/v1/responses/{final['id']}").json()["output"] == final["output"]


def test_json_schema_format_reaches_the_grammar(client, engine):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = create(client, text={"format": {"type": "json_schema", "name": "thing",
                                           "schema": schema, "strict": True}})
    constraint = engine.calls[-1][1].constraint
    assert constraint.kind == "json_schema" and constraint.schema == schema
    assert body["text"]["format"]["type"] == "json_schema"
    create(client, text={"format": {"type": "json_object"}})
    assert engine.calls[-1][1].constraint.kind == "json_object"


def test_agent_client_extras_are_accepted(client, engine):
    body = create(client, reasoning={"effort": "medium", "summary": "auto"},
                  include=["reasoning.encrypted_content"], store=False,
                  parallel_tool_calls=True, prompt_cache_key="abc",
                  client_metadata={"x": "y"}, tools=[WEATHER_TOOL, {"type": "web_search"}],
                  tool_choice="auto", user="u1", safety_identifier="s")
    assert body["status"] == "completed"


@pytest.mark.parametrize(("extra", "param"), [
    ({"tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]},
     "tool_choice"),
    ({"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "http://x/y.png"}]}]}, "input"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input"),
    ({"background": True}, "background"),
    ({"truncation": "auto"}, "truncation"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"tools": [{"type": "custom", "name": "patch"}]}, "tools"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 513}}, "metadata"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"temperature": 3}, "temperature"),
])
def test_what_cannot_be_honoured_is_a_422_naming_the_field(client, extra, param):
    body = create(client, 422, **extra)
    named = body["error"]["param"] or body["error"]["message"]  # model-level: the message
    assert param in named, body


def test_huge_input_arrays_and_text_are_refused_cheaply(client):
    many = create(client, 400, input=[{"role": "user", "content": "x"}] * 5000)
    assert many["error"]["code"] == "limit_exceeded" and many["error"]["param"] == "input"
    big = create(client, 400, input="x" * 1_000_001)
    assert big["error"]["code"] == "limit_exceeded"
    parts = create(client, 400, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "x"}] * 5000}])
    assert parts["error"]["code"] == "limit_exceeded"
    nested: object = "x"
    for _ in range(900):
        nested = [nested]
    deep_content = client.post("/v1/responses", json={"model": MODEL, "input": [
        {"role": "user", "content": nested}]})
    assert deep_content.status_code == 422 and deep_content.json()["error"]["param"]
    deep = {"type": "object", "properties": {"a": {}}}
    node = deep["properties"]["a"]
    for _ in range(40):
        node["type"] = "object"
        node["properties"] = {"a": {}}
        node = node["properties"]["a"]
    schema = create(client, 400, text={"format": {"type": "json_schema", "name": "d",
                                                  "schema": deep}})
    assert schema["error"]["param"] == "text.format.schema"


def test_prompt_too_long_is_context_length_exceeded():
    engine = FakeChatEngine(MODEL, context_length=8)
    with make_client(engine) as client:
        body = create(client, 400, input="one two three four five six seven eight nine")
        assert body["error"]["code"] == "context_length_exceeded"
        assert body["error"]["param"] == "input"


def test_another_keys_responses_are_404(engine):
    with make_client(engine, api_key="key-a,key-b") as client:
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        made = client.post("/v1/responses", json={"model": MODEL, "input": "hi"}, headers=a)
        rid = made.json()["id"]
        assert client.get(f"/v1/responses/{rid}", headers=a).status_code == 200
        assert client.get(f"/v1/responses/{rid}", headers=b).status_code == 404
        assert client.get(f"/v1/responses/{rid}/input_items", headers=b).status_code == 404
        assert client.delete(f"/v1/responses/{rid}", headers=b).status_code == 404
        follow = client.post("/v1/responses", headers=b, json={
            "model": MODEL, "input": "and?", "previous_response_id": rid})
        assert follow.status_code == 404
        assert client.get(f"/v1/responses/{rid}", headers=a).status_code == 200


def test_store_survives_a_restart_and_holds_no_key(tmp_path, engine):
    with make_client(engine, data_dir=str(tmp_path), api_key="secret-key-1") as client:
        made = client.post("/v1/responses", json={"model": MODEL, "input": "hi"},
                           headers={"Authorization": "Bearer secret-key-1"}).json()
    assert b"secret-key-1" not in (tmp_path / "responses.sqlite3").read_bytes()
    with make_client(engine, data_dir=str(tmp_path), api_key="secret-key-1") as client:
        got = client.get(f"/v1/responses/{made['id']}",
                         headers={"Authorization": "Bearer secret-key-1"})
        assert got.status_code == 200 and got.json() == made


def test_a_chain_of_responses_is_bounded_like_one_request(engine):
    with make_client(engine, max_messages=6, max_prompt_chars=400) as client:
        first = create(client, input=[{"role": "user", "content": f"turn {i} " * 6}
                                      for i in range(3)])  # 126 characters
        refused = create(client, 400, previous_response_id=first["id"], input=[
            {"role": "user", "content": "more"}] * 3)  # 3 + 1 answer + 3 > 6
        assert refused["error"]["code"] == "limit_exceeded"
        assert refused["error"]["param"] == "input"
        long_output = [{"type": "input_text", "text": "y" * 170}] * 2  # alone: fits
        refused = create(client, 400, previous_response_id=first["id"], input=[
            {"type": "function_call_output", "call_id": "c1", "output": long_output}])
        assert "with the previous responses" in refused["error"]["message"]
        create(client, previous_response_id=first["id"], input="fine")
