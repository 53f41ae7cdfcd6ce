"""Anthropic's Messages API on the real server with the bundled chat model: the official
`anthropic` Python SDK (create, stream, a tool-use round trip, count_tokens, its exception
classes) and its Node SDK (tests/e2e/node/anthropic/messages_check.mjs; `@anthropic-ai/sdk`
is installed from npm into that folder's node_modules, ignored by git, on the first run)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

anthropic = pytest.importorskip("anthropic")

NODE_DIR = Path(__file__).parent / "node" / "anthropic"
SCRIPT = NODE_DIR / "messages_check.mjs"
SDK_MAJOR = 1
#: The Python SDK (2.x) has no sampling arguments of its own; the API's fields go as extra_body.
GREEDY = {"temperature": 0}
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "required": ["city"], "additionalProperties": False,
                            "properties": {"city": {"type": "string"}}}}


@pytest.fixture(scope="module")
def client(base_url):
    return anthropic.Anthropic(base_url=base_url, api_key="not-needed", max_retries=0,
                               timeout=120)


def prompt_tokens(message) -> int:
    return message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_create(client, chat_model_id):
    message = client.messages.create(model=chat_model_id, max_tokens=12, extra_body=GREEDY,
                                     system="Be brief.", messages=ask("Say hello."))
    assert message.type == "message" and message.role == "assistant"
    assert message.model == chat_model_id and message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 12 and message.usage.input_tokens > 0


def test_max_tokens_stop_reason(client, chat_model_id):
    message = client.messages.create(model=chat_model_id, max_tokens=3, extra_body=GREEDY,
                                     messages=ask("Write a long story about a dragon."))
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_stream_text_and_final_message(client, chat_model_id):
    kinds: list[str] = []
    with client.messages.stream(model=chat_model_id, max_tokens=16, extra_body=GREEDY,
                                messages=ask("Count to five.")) as stream:
        pieces = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "text":
                pieces.append(event.text)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert len(pieces) > 1 and final.content[0].text == "".join(pieces)
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert 0 < final.usage.output_tokens <= 16


def test_raw_stream_has_ping_and_the_event_names(base_url, chat_model_id):
    with httpx.stream("POST", f"{base_url}/v1/messages", timeout=120, json={
            "model": chat_model_id, "max_tokens": 4, "stream": True,
            "messages": ask("Hi")}) as response:
        names = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]


def test_tool_use_round_trip(client, chat_model_id):
    first = client.messages.create(
        model=chat_model_id, max_tokens=64, extra_body=GREEDY, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=ask("What is the weather in Paris?"))
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    assert isinstance(call.input["city"], str)
    second = client.messages.create(
        model=chat_model_id, max_tokens=24, extra_body=GREEDY, tools=[WEATHER],
        messages=[*ask("What is the weather in Paris?"),
                  {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "18 degrees and sunny"}]}])
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert second.content
    # The second prompt holds the first, the call and its result; the first is read from cache.
    assert prompt_tokens(second) > prompt_tokens(first)
    assert second.usage.cache_read_input_tokens > 0


def test_streamed_tool_use_accumulates_the_input(client, chat_model_id):
    with client.messages.stream(model=chat_model_id, max_tokens=64, extra_body=GREEDY,
                                tools=[WEATHER], tool_choice={"type": "any"},
                                messages=ask("Weather in Rome?")) as stream:
        final = stream.get_final_message()
    (call,) = final.content
    assert call.type == "tool_use" and isinstance(call.input["city"], str)
    assert final.stop_reason == "tool_use"


def test_structured_output_parses_against_its_schema(client, chat_model_id):
    schema = {"type": "object", "additionalProperties": False, "required": ["capital"],
              "properties": {"capital": {"type": "string", "maxLength": 40}}}
    message = client.messages.create(
        model=chat_model_id, max_tokens=40, extra_body=GREEDY,
        output_config={"format": {"type": "json_schema", "schema": schema}},
        messages=ask("What is the capital of France? Answer in JSON."))
    assert message.stop_reason == "end_turn"
    assert isinstance(json.loads(message.content[0].text)["capital"], str)


def test_count_tokens_matches_what_create_bills(client, chat_model_id):
    messages = ask("Tell me about the moon.")
    counted = client.messages.count_tokens(model=chat_model_id, system="Be brief.",
                                           messages=messages)
    made = client.messages.create(model=chat_model_id, max_tokens=1, system="Be brief.",
                                  messages=messages)
    billed = made.usage.input_tokens + (made.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == billed > 5


def test_a_repeated_prompt_is_a_cache_read(client, chat_model_id):
    messages = ask("Describe the water cycle in a few words, please. " * 4)
    client.messages.create(model=chat_model_id, max_tokens=1, messages=messages)
    again = client.messages.create(model=chat_model_id, max_tokens=1, messages=messages)
    assert again.usage.cache_read_input_tokens > 20


def test_sdk_exception_classes_for_our_errors(client, chat_model_id):
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=ask("hi"))
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.UnprocessableEntityError) as bad:
        client.messages.create(model=chat_model_id, max_tokens=5, messages=ask("hi"),
                               extra_body={"temperature": 1.7})
    assert "temperature" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=chat_model_id, max_tokens=5,
                               messages=ask("word " * 9000))  # past the 8192-token context


@pytest.fixture(scope="module")
def node_results(base_url, chat_model_id) -> dict:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"needs Node.js and npm on PATH (node: {node}, npm: {npm})")
    package = NODE_DIR / "node_modules" / "@anthropic-ai" / "sdk" / "package.json"
    if not package.exists() or not json.loads(package.read_text())["version"].startswith(
            f"{SDK_MAJOR}."):
        result = subprocess.run(
            [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund",
             "--no-save", "--no-package-lock", f"@anthropic-ai/sdk@{SDK_MAJOR}"],
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"npm install failed:\n{result.stdout}\n{result.stderr}"
    run = subprocess.run([node, str(SCRIPT), base_url, chat_model_id], capture_output=True,
                         text=True, timeout=300, cwd=NODE_DIR)
    assert run.returncode == 0, f"node failed:\n{run.stdout}\n{run.stderr}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def node_check(results: dict, name: str) -> dict:
    result = results[name]
    assert result["ok"], f"{name}: {result.get('error')}"
    return result


def test_node_create(node_results, chat_model_id):
    made = node_check(node_results, "create")
    assert made["type"] == "message" and made["model"] == chat_model_id
    assert made["blocks"] == ["text"] and made["text"]
    assert 0 < made["usage"]["output_tokens"] <= 12


def test_node_stream(node_results):
    streamed = node_check(node_results, "stream")
    assert streamed["events"][0] == "message_start" and streamed["events"][-1] == "message_stop"
    assert len(streamed["deltas"]) > 1 and streamed["text"] == "".join(streamed["deltas"])
    assert 0 < streamed["usage"]["output_tokens"] <= 16


def test_node_tool_round_trip(node_results):
    tools = node_check(node_results, "tools")
    assert tools["stop_reason"] == "tool_use" and tools["call"]["name"] == "get_weather"
    assert isinstance(tools["call"]["input"]["city"], str)
    assert tools["answer_blocks"]


def test_node_count_tokens(node_results):
    counted = node_check(node_results, "count")
    assert counted["counted"] == counted["billed"] > 0


def test_node_not_found(node_results):
    error = node_check(node_results, "not_found")
    assert error["threw"] and error["is_not_found"] and error["status"] == 404
    assert error["type"] == "not_found_error" and "claude-no-such-model" in error["message"]
