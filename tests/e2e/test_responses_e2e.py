"""The Responses API on the real server and the bundled model, through the official ``openai``
client and the OpenAI Agents SDK: plain, streamed, the stream helper, structured output,
function tools with a tool-output round trip, stored conversations, keys, long prompts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.server import running_server, wait_for_health
from tests.openai_schema import assert_matches_openai
from tests.unit.test_responses_http import assert_matches_event

KEY = "sk-responses-one"
OTHER_KEY = "sk-responses-two"
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}



def chat_only_server(data_dir: str, log_path, **extra: str) -> Iterator[str]:
    """The real server, with stored responses in ``data_dir``; only the chat model is loaded
    (on first use), to spare the shared machine the other three."""
    env = {"LABS_DATA_DIR": data_dir, "LABS_API_KEY": f"{KEY},{OTHER_KEY}",
           "LABS_PRELOAD_ON_START": "false", **extra}
    with running_server(env=env, log_path=log_path, wait_ready=False) as url:
        wait_for_health(url)
        yield url


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("responses-data"))


@pytest.fixture(scope="module")
def url(data_dir, tmp_path_factory) -> Iterator[str]:
    yield from chat_only_server(data_dir, tmp_path_factory.mktemp("log") / "server.log")


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model(client) -> str:
    return client.models.list().data[0].id


def raw(url: str, body: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{url}/v1/responses", json=body, timeout=300,
                      headers={"Authorization": f"Bearer {key}"})


def test_plain_response(client, url, model):
    response = client.responses.create(model=model, input="Say hello in one short sentence.",
                                       max_output_tokens=40, temperature=0)
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    assert response.usage.input_tokens > 10 and response.usage.output_tokens >= 1
    body = raw(url, {"model": model, "input": "Say hello.", "max_output_tokens": 20}).json()
    assert_matches_openai(body, "Response")


def test_a_repeated_prompt_reports_cached_tokens(client, model):
    instructions = "You are a helpful assistant. " * 20
    for _ in range(2):
        response = client.responses.create(model=model, instructions=instructions,
                                           input="Name a colour.", max_output_tokens=8,
                                           temperature=0, store=False)
    assert response.usage.input_tokens_details.cached_tokens > 100


def test_stream_true_events_validate(client, url, model):
    events = list(client.responses.create(model=model, input="Count to five.", stream=True,
                                          max_output_tokens=30, temperature=0))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[1] == "response.in_progress"
    assert types[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and events[-1].response.output_text == text
    with httpx.stream("POST", f"{url}/v1/responses", timeout=300,
                      headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": model, "input": "Hi!", "stream": True,
                            "max_output_tokens": 10}) as stream:
        lines = "".join(stream.iter_text())
    for block in filter(None, lines.split("\n\n")):
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        assert_matches_event(event)


def test_the_stream_helper(client, model):
    with client.responses.stream(model=model, input="Name three fruits.",
                                 max_output_tokens=30, temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text.strip()


class City(BaseModel):
    name: str
    country: str


def test_text_format_parses_into_the_model(client, model):
    parsed = client.responses.parse(model=model, input="Name a city in France.",
                                    text_format=City, max_output_tokens=60, temperature=0)
    assert isinstance(parsed.output_parsed, City)
    assert parsed.output_parsed.name


def test_json_schema_output_validates(client, model):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"], "additionalProperties": False}
    response = client.responses.create(
        model=model, input="What is 2 + 2?", max_output_tokens=30, temperature=0,
        text={"format": {"type": "json_schema", "name": "sum", "schema": schema,
                         "strict": True}})
    assert isinstance(json.loads(response.output_text)["answer"], int)


def test_function_tool_round_trip(client, model):
    first = client.responses.create(model=model, input="What is the weather in Paris?",
                                    tools=[WEATHER], tool_choice="required",
                                    max_output_tokens=60, temperature=0)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)
    second = client.responses.create(
        model=model, previous_response_id=first.id, tools=[WEATHER], max_output_tokens=40,
        temperature=0, input=[{"type": "function_call_output", "call_id": call.call_id,
                               "output": "Sunny and 21 degrees."}])
    assert second.status in ("completed", "incomplete") and second.output
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["function_call_output"]


def test_stored_conversation_retrieve_delete_and_input_items(client, model):
    first = client.responses.create(model=model, input="My name is Ada.",
                                    max_output_tokens=20, temperature=0)
    second = client.responses.create(model=model, input="What is my name?",
                                     previous_response_id=first.id, max_output_tokens=20,
                                     temperature=0)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens  # the first turn came along
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    items = client.responses.input_items.list(first.id)
    assert items.data[0].content[0].text == "My name is Ada."
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_another_keys_responses_are_not_found(client, url, model):
    mine = client.responses.create(model=model, input="Hi", max_output_tokens=5)
    other = openai.OpenAI(base_url=f"{url}/v1", api_key=OTHER_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=model, input="and?", previous_response_id=mine.id)
    assert client.responses.retrieve(mine.id).id == mine.id


def test_an_agent_sized_prompt_fits_and_a_huge_one_is_context_length_exceeded(client, model):
    notes = "Note: the build passes and the tests are green. " * 500  # about 5,500 tokens
    long = client.responses.create(model=model, instructions=notes, input="Summarise.",
                                   max_output_tokens=10, temperature=0, store=False)
    assert long.usage.input_tokens > 4000 and long.output_text
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=model, input=notes * 2, max_output_tokens=10)
    assert refused.value.code == "context_length_exceeded"


def test_hostile_inputs_are_4xx(url, model):
    nested: object = "x"
    for _ in range(900):
        nested = [nested]
    cases = [
        {"input": [{"role": "user", "content": "x"}] * 5000},
        {"input": [{"role": "user", "content": nested}]},
        {"input": [{"type": "message", "role": "tool", "content": "x"}]},
        {"input": [{"role": "user", "content": [{"type": "input_image",
                                                 "image_url": "http://e/x.png"}]}]},
        {"input": [{"type": "bogus"}]},
        {"metadata": {f"k{i}": "v" * 600 for i in range(40)}},
        {"tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]},
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]
                    * 10}] * 500},
    ]
    for case in cases:
        response = raw(url, {"model": model, "input": "hi", **case})
        assert 400 <= response.status_code < 500, (case, response.text[:300])
        assert response.json()["error"]["message"]
    assert raw(url, {"model": model, "input": "Still fine?",
                     "max_output_tokens": 5}).status_code == 200


def test_agents_sdk_runs_a_function_tool(url, model):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    ran: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        ran.append(city)
        return f"It is sunny in {city}."

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    agent = agents.Agent(
        name="weather", instructions="Answer questions about the weather.",
        tools=[get_weather],
        # The 135M model, once shown the tool's result, tends to call it again for ever;
        # the tool's output is the final answer here (the model's own answer after a tool
        # result is covered by test_function_tool_round_trip).
        tool_use_behavior="stop_on_first_tool",
        model=agents.OpenAIResponsesModel(model=model, openai_client=client),
        model_settings=agents.ModelSettings(tool_choice="required", max_tokens=60,
                                            temperature=0))
    result = agents.Runner.run_sync(agent, "What is the weather in Paris?", max_turns=4)
    assert ran, "the tool did not run"
    assert result.final_output == f"It is sunny in {ran[0]}."


def test_store_survives_a_restart(tmp_path):
    data = str(tmp_path / "data")
    for server in chat_only_server(data, tmp_path / "first.log"):
        first = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
        model = first.models.list().data[0].id
        kept = first.responses.create(model=model, input="Remember me.", max_output_tokens=5)
    for server in chat_only_server(data, tmp_path / "second.log"):
        again = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
        assert again.responses.retrieve(kept.id).output_text == kept.output_text
        follow = again.responses.create(model=model, input="Who?", max_output_tokens=5,
                                        previous_response_id=kept.id)
        assert follow.usage.input_tokens > kept.usage.input_tokens


def slots_active(url: str) -> float | None:
    """From /metrics (the engine worker reports its queue about once a second)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("labs_chat_slots_active{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for_slots(url: str, count: int) -> bool:
    deadline = time.monotonic() + 15
    while slots_active(url) != count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_client_that_leaves_a_stream_stops_its_generation(url, model):
    body = {"model": model, "input": "Tell me a very long story.", "stream": True,
            "max_output_tokens": 900, "temperature": 0}
    with httpx.stream("POST", f"{url}/v1/responses", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as stream:
        lines = stream.iter_lines()
        created = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        assert created["type"] == "response.created"
        assert wait_for_slots(url, 1)  # 900 tokens: still decoding
    assert wait_for_slots(url, 0), "the generation went on after the client left"
    missing = httpx.get(f"{url}/v1/responses/{created['response']['id']}",
                        headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 404  # never finished, so never stored
