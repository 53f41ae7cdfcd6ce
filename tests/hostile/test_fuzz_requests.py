"""Property-based fuzzing of every JSON endpoint on the app with fake engines (in-process):
request-shaped bodies whose fields are valid, or hostile (lone surrogates, NUL, NaN, Infinity,
huge integers, wrong types, bytes that are not UTF-8). No request may get a 5xx, and every
refusal must carry OpenAI's error body.

Hypothesis is derandomized (the same examples on every run) so CI cannot flake; at least
2000 requests are sent in all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labs_api.app import create_app
from labs_api.engines.embedding.batcher import EmbeddingBatcher
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine
from tests.unit.test_embeddings_batcher import FakeEmbeddingEngine
from tests.unit.test_speech_http import FakeSpeechEngine

CHAT, EMBED, VOICE = "fake-chat", "fake-embed", "fake-voice"
EXAMPLES = 350  # per endpoint; seven endpoints
SENT: dict[str, int] = {}

# -- leaves ---------------------------------------------------------------------------------
#: Any code point, lone surrogates and NUL included (Hypothesis leaves out surrogates unless
#: told not to).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
hostile_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                           st.integers(min_value=-(2**80), max_value=2**80),
                           st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308]))
hostile = st.one_of(any_text, hostile_number, st.booleans(), st.none(),
                    st.lists(st.one_of(any_text, st.integers()), max_size=3),
                    st.dictionaries(any_text, st.integers(), max_size=2))


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes a hostile one (most bodies then hold one or two)."""
    return st.sampled_from(range(12)).flatmap(lambda i: hostile if i == 0 else valid)


# -- request bodies --------------------------------------------------------------------------
words = st.text(st.sampled_from("abc xyz.!?é"), min_size=1, max_size=20)
message = st.fixed_dictionaries(
    {"role": field(st.sampled_from(["system", "developer", "user", "assistant", "tool"])),
     "content": field(st.one_of(words, st.lists(st.fixed_dictionaries(
         {"type": st.just("text"), "text": field(words)}), max_size=2)))},
    optional={"name": field(words), "tool_call_id": field(words)})
schema = st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(
    st.one_of(words, any_text), st.fixed_dictionaries(
        {"type": field(st.sampled_from(["string", "integer"]))}),
    max_size=3)})
tool = st.fixed_dictionaries({"type": field(st.just("function")), "function": st.fixed_dictionaries(
    {"name": field(st.sampled_from(["get_weather", "f"]))},
    optional={"description": field(words), "parameters": field(schema)})})
sampling = {
    "max_tokens": field(st.integers(1, 50)), "temperature": field(st.floats(0, 2)),
    "top_p": field(st.floats(0.01, 1)), "top_k": field(st.integers(0, 50)),
    "seed": field(st.integers(0, 2**32)), "stream": field(st.booleans()),
    "stop": field(st.one_of(words, st.lists(words, max_size=5))),
    "frequency_penalty": field(st.floats(-2, 2)), "presence_penalty": field(st.floats(-2, 2)),
    "logit_bias": field(st.dictionaries(st.sampled_from(["1", "5", "x"]), st.floats(-100, 100),
                                        max_size=2)),
    "user": field(words),
}
BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "/v1/chat/completions": st.fixed_dictionaries(
        {"model": field(st.just(CHAT)),
         "messages": field(st.lists(message, min_size=1, max_size=3))},
        optional={**sampling, "n": field(st.integers(1, 9)),
                  "logprobs": field(st.booleans()), "top_logprobs": field(st.integers(0, 21)),
                  "tools": field(st.lists(tool, max_size=2)),
                  "tool_choice": field(st.sampled_from(["none", "auto", "required"])),
                  "response_format": field(st.one_of(
                      st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
                      st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema":
                                             st.fixed_dictionaries({"name": words,
                                                                    "schema": schema})})))}),
    "/v1/completions": st.fixed_dictionaries(
        {"model": field(st.just(CHAT)),
         "prompt": field(st.one_of(words, st.lists(words, max_size=3),
                                   st.lists(st.integers(0, 999), min_size=1, max_size=4)))},
        optional={**sampling, "n": field(st.integers(1, 9)), "echo": field(st.booleans()),
                  "logprobs": field(st.integers(0, 6)), "best_of": field(st.integers(1, 3))}),
    "/v1/embeddings": st.fixed_dictionaries(
        {"input": field(st.one_of(words, st.lists(words, max_size=4)))},
        optional={"model": field(st.just(EMBED)), "dimensions": field(st.integers(1, 20)),
                  "encoding_format": field(st.sampled_from(["float", "base64"])),
                  "input_type": field(st.sampled_from(["query", "document"]))}),
    "/v1/similarities": st.fixed_dictionaries(
        {"sentences": field(st.lists(words, max_size=4))},
        optional={"model": field(st.just(EMBED))}),
    "/v1/tts": st.fixed_dictionaries({"text": field(words)},
                                     optional={"model": field(st.just(VOICE))}),
    "/v1/audio/speech": st.fixed_dictionaries(
        {"model": field(st.just("tts-1")), "input": field(words),
         "voice": field(st.sampled_from(["alloy", "fake-a", "nobody"]))},
        optional={"response_format": field(st.sampled_from(["wav", "pcm", "mp3"])),
                  "speed": field(st.floats(0.25, 4.0)), "instructions": field(words)}),
}


response_item = st.one_of(
    st.fixed_dictionaries(
        {"role": field(st.sampled_from(["system", "developer", "user", "assistant"])),
         "content": field(st.one_of(words, st.lists(st.fixed_dictionaries(
             {"type": field(st.sampled_from(["input_text", "output_text", "input_image"])),
              "text": field(words)}), max_size=2)))},
        optional={"type": field(st.just("message"))}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": field(words),
                           "name": field(words), "arguments": field(words)}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": field(words),
                           "output": field(words)}))
BODIES["/v1/responses"] = st.fixed_dictionaries(
    {"model": field(st.just(CHAT)),
     "input": field(st.one_of(words, st.lists(response_item, min_size=1, max_size=3)))},
    optional={"max_output_tokens": field(st.integers(1, 50)),
              "temperature": field(st.floats(0, 2)), "top_p": field(st.floats(0.01, 1)),
              "stream": field(st.booleans()), "store": field(st.booleans()),
              "instructions": field(words), "user": field(words),
              "previous_response_id": field(words),
              "metadata": field(st.dictionaries(words, words, max_size=3)),
              "tools": field(st.lists(st.one_of(
                  st.fixed_dictionaries({"type": st.just("function"),
                                         "name": field(st.sampled_from(["get_weather", "f"]))},
                                        optional={"parameters": field(schema)}),
                  st.fixed_dictionaries({"type": st.just("web_search")})), max_size=2)),
              "tool_choice": field(st.sampled_from(["none", "auto", "required"])),
              "include": field(st.lists(st.sampled_from(
                  ["reasoning.encrypted_content", "message.output_text.logprobs"]),
                  max_size=2)),
              "reasoning": field(st.fixed_dictionaries({}, optional={
                  "effort": field(st.sampled_from(["low", "high"]))})),
              "text": field(st.fixed_dictionaries({"format": st.one_of(
                  st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
                  st.fixed_dictionaries({"type": st.just("json_schema"), "name": words,
                                         "schema": schema}))}))})


@st.composite
def raw_body(draw: st.DrawFn, path: str) -> bytes:
    """The body as JSON text with NaN/Infinity literals and \\u escapes for surrogates, so the
    server sees exactly what a hostile client can send; sometimes not UTF-8 at all."""
    text = json.dumps(draw(BODIES[path]), allow_nan=True)  # ASCII, surrogates as escapes
    mangle = draw(st.sampled_from(["none"] * 8 + ["latin1", "truncate"]))
    if mangle == "latin1":
        return text.replace('"', '"\xe9', 1).encode("latin-1")
    if mangle == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))].encode()
    return text.encode()


def registry() -> tuple[ModelRegistry, EmbeddingBatcher]:
    batcher = EmbeddingBatcher(FakeEmbeddingEngine(EMBED), batch_size=8, max_wait=0.0,
                               max_queue=256, warm_up=False)
    slots = [
        ModelSlot(model_id=CHAT, kind="chat", load=lambda: None, state="ready",
                  engine=FakeChatEngine(CHAT)),
        ModelSlot(model_id=EMBED, kind="embedding", load=lambda: batcher, state="ready",
                  engine=batcher),
        ModelSlot(model_id=VOICE, kind="speech", load=lambda: None, state="ready",
                  engine=FakeSpeechEngine(VOICE)),
    ]
    return ModelRegistry(slots), batcher


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    models, batcher = registry()
    with TestClient(create_app(Settings(preload_on_start=False, data_dir=":memory:"), models),
                    raise_server_exceptions=False) as client:
        yield client
    batcher.close()


def check(client: TestClient, path: str, body: bytes) -> None:
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    SENT[path] = SENT.get(path, 0) + 1
    assert response.status_code < 500, (path, body[:300], response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error", response.text
        if response.status_code == 422:
            assert isinstance(response.json()["detail"], list)
    elif path == "/v1/responses" and response.headers["content-type"].startswith(
            "text/event-stream"):  # typed events, ending with the whole response; no [DONE]
        assert "event: response.completed\n" in response.text or \
            "event: response.incomplete\n" in response.text, response.text[-300:]
        assert "event: error\n" not in response.text, response.text[-500:]
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n"), response.text[-300:]
        assert '"error"' not in response.text, response.text[-500:]


@pytest.mark.parametrize("path", list(BODIES))
def test_no_request_gets_a_5xx(client, path):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=raw_body(path))
    def run(body: bytes) -> None:
        check(client, path, body)

    before = SENT.get(path, 0)
    run()
    assert SENT[path] - before >= EXAMPLES


def test_at_least_2000_requests_were_sent():
    if len(SENT) < len(BODIES):
        pytest.skip("runs after the fuzzing of every endpoint")
    print(f"fuzzed requests: {SENT} ({sum(SENT.values())} in all)")
    assert sum(SENT.values()) >= 2000
