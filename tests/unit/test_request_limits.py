"""Cheap limits (labs_api.api.limits): each is a 400 that names the field, the limit and its
variable, refused before validation or any engine work; the limits follow the settings."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from labs_api.api.limits import MAX_GENERATIONS, MAX_OPTIONAL_PROPERTIES
from labs_api.app import create_app
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with

CHAT = "fake-chat"
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def engine() -> FakeChatEngine:
    return FakeChatEngine(CHAT)


def make_client(engine, **settings) -> TestClient:
    return TestClient(create_app(Settings(**settings), registry_with(engine)),
                      raise_server_exceptions=False)


@pytest.fixture
def client(engine) -> TestClient:
    return make_client(engine)


def assert_limit(response, param: str, *words: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "limit_exceeded" and error["param"] == param
    assert error["type"] == "invalid_request_error"
    for word in words:
        assert word in error["message"], error["message"]


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": CHAT, **body})


def test_too_many_messages_is_refused_before_validation(client, engine):
    response = chat(client, messages=[{"role": "user", "content": "w"}] * 4097)
    assert_limit(response, "messages", "4097 messages", "at most 4096", "LABS_MAX_MESSAGES")
    assert engine.calls == []
    assert chat(client, messages=[{"role": "user", "content": "w"}] * 4096).status_code == 400
    # (4096 one-word messages are valid, and then too long for the fake's 64-token context)


def test_the_limits_follow_the_settings(engine):
    client = make_client(engine, max_messages=2, max_prompt_chars=10, max_tools=1)
    assert_limit(chat(client, messages=HELLO * 3), "messages", "at most 2")
    assert_limit(chat(client, messages=[{"role": "user", "content": "x" * 11}]), "messages",
                 "11 characters", "LABS_MAX_PROMPT_CHARS")
    assert chat(client, messages=[{"role": "user", "content": "x" * 10}]).status_code == 200


def test_content_parts_and_tool_text_count_too(engine):
    client = make_client(engine, max_messages=3, max_prompt_chars=100)
    parts = [{"type": "text", "text": "a"}] * 4
    assert_limit(chat(client, messages=[{"role": "user", "content": parts}]), "messages",
                 "4 content parts")
    tool = {"type": "function", "function": {"name": "f", "description": "d" * 200}}
    assert_limit(chat(client, messages=HELLO, tools=[tool]), "messages", "messages and tools")


def test_too_many_tools(client):
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]
    assert_limit(chat(client, messages=HELLO, tools=tools), "tools", "129 tools",
                 "LABS_MAX_TOOLS")


def schema_with(properties: int, required: bool = True) -> dict:
    props = {f"property_name_{i}": {"type": "string"} for i in range(properties)}
    return {"type": "object", "properties": props,
            "required": list(props) if required else []}


def json_schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


@pytest.mark.parametrize(("schema", "words"), [
    (schema_with(513), ["513 schema properties", "LABS_MAX_SCHEMA_PROPERTIES"]),
    (schema_with(MAX_OPTIONAL_PROPERTIES + 1, required=False),
     [f"{MAX_OPTIONAL_PROPERTIES + 1} optional properties"]),
    ({"enum": list(range(1025))}, ["1025 enum and const values"]),
    ({"type": "string", "description": "x" * 70_000}, ["characters of JSON schema",
                                                       "LABS_MAX_SCHEMA_BYTES"]),
])
def test_json_schemas_are_bounded(client, engine, schema, words):
    response = chat(client, messages=HELLO, response_format=json_schema_format(schema))
    assert_limit(response, "response_format.json_schema.schema", *words)
    assert engine.calls == []


def test_schema_depth_is_bounded_in_tool_parameters(client):
    deep: dict = {"type": "string"}
    for _ in range(20):
        deep = {"type": "object", "properties": {"x": deep}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    assert_limit(chat(client, messages=HELLO, tools=tools), "tools.0.function.parameters",
                 "nested deeper than 32", "LABS_MAX_SCHEMA_DEPTH")


def test_schemas_of_all_tools_count_together(engine):
    client = make_client(engine, max_schema_properties=10)
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": schema_with(4)}}
             for i in range(3)]
    assert_limit(chat(client, messages=HELLO, tools=tools), "tools.2.function.parameters",
                 "12 schema properties")


def test_a_schema_under_the_limits_is_accepted(client, engine):
    response = chat(client, messages=HELLO, response_format=json_schema_format(schema_with(64)))
    assert response.status_code == 200, response.text
    assert engine.calls[-1][1].constraint.kind == "json_schema"


def test_completions_generations_are_capped(client, engine):
    response = client.post("/v1/completions", json={"model": CHAT, "prompt": ["a"] * 16, "n": 8})
    assert_limit(response, "n", "128 generations", f"at most {MAX_GENERATIONS}")
    assert engine.calls == []
    ok = client.post("/v1/completions", json={"model": CHAT, "prompt": ["a"] * 8, "n": 2,
                                              "max_tokens": 1})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 16


def test_completions_prompt_characters_are_bounded(engine):
    client = make_client(engine, max_prompt_chars=100)
    response = client.post("/v1/completions", json={"model": CHAT, "prompt": ["x" * 60] * 2})
    assert_limit(response, "prompt", "120 characters", "LABS_MAX_PROMPT_CHARS")


def test_embedding_characters_are_bounded(engine):
    client = make_client(engine, max_embedding_chars=100)
    response = client.post("/v1/embeddings", json={"input": ["x" * 60, "y" * 60]})
    assert_limit(response, "input", "120 characters", "LABS_MAX_EMBEDDING_CHARS")
    response = client.post("/v1/similarities", json={"sentences": ["x" * 101]})
    assert_limit(response, "sentences", "101 characters")


def test_token_id_prompts_are_bounded_by_a_quarter_of_the_characters(engine):
    client = make_client(engine, max_prompt_chars=40)
    response = client.post("/v1/completions", json={"model": CHAT, "prompt": [[1] * 6] * 2})
    assert_limit(response, "prompt", "12 token ids", "at most 10")


def test_the_new_settings_are_checked_at_start_up():
    from pydantic import ValidationError

    assert Settings(root_path="/api").root_path == "/api"
    for bad in ("api", "/api/", "/a b"):
        with pytest.raises(ValidationError):
            Settings(root_path=bad)
    with pytest.raises(ValidationError):
        Settings(max_connections=0)
    with pytest.raises(ValidationError):
        Settings(header_timeout=0)
