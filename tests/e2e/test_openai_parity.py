"""OpenAI fields beyond the spec, on the real bundled model through the official client."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


def test_json_object_mode_always_parses(openai_client, chat_model_id):
    response = openai_client.chat.completions.create(
        model=chat_model_id, max_tokens=120, temperature=0.8, seed=5,
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe a cat."}])
    parsed = json.loads(response.choices[0].message.content)
    assert isinstance(parsed, dict)


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_output_validates(openai_client, chat_model_id, stream):
    request = dict(model=chat_model_id, max_tokens=80, temperature=0,
                   messages=[{"role": "user", "content": "Invent a person."}],
                   response_format={"type": "json_schema",
                                    "json_schema": {"name": "person", "schema": PERSON}})
    if stream:
        text = "".join(c.choices[0].delta.content or ""
                       for c in openai_client.chat.completions.create(**request, stream=True)
                       if c.choices)
    else:
        text = openai_client.chat.completions.create(**request).choices[0].message.content
    jsonschema.validate(json.loads(text), PERSON)


def test_logprobs_are_real_log_probabilities(openai_client, chat_model_id):
    response = openai_client.chat.completions.create(
        model=chat_model_id, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3,
        messages=[{"role": "user", "content": "Say hello."}])
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert "".join(entry.token for entry in content) == response.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0
        alternatives = entry.top_logprobs
        assert len(alternatives) == 3
        # Greedy: the chosen token is the most likely one.
        assert alternatives[0].token == entry.token
        assert math.isclose(alternatives[0].logprob, entry.logprob, abs_tol=1e-6)
        assert [a.logprob for a in alternatives] == sorted((a.logprob for a in alternatives),
                                                           reverse=True)


async def first_logprob(engine, messages, params):
    stream = engine.stream(messages, params)
    try:
        return (await anext(stream)).logprobs[0]
    finally:
        await stream.aclose()


def test_logit_bias_bans_a_token_and_can_force_one():
    import asyncio

    from labs_api.engines.chat.base import ChatMessage, SamplingParams
    from labs_api.engines.chat.factory import bundled_gguf_path
    from labs_api.engines.chat.llama_cpp_engine import LlamaCppChatEngine, LlamaCppOptions

    engine = LlamaCppChatEngine("smol", bundled_gguf_path(), LlamaCppOptions(slots=1))
    messages = [ChatMessage("user", "Say hello.")]
    greedy = SamplingParams(max_tokens=4, temperature=0, top_p=1, logprobs=0)
    try:
        first = asyncio.run(engine.generate(messages, greedy))
        first_token = asyncio.run(first_logprob(engine, messages, greedy))
        banned = engine.model.tokenize(first_token.token, add_bos=False)
        assert len(banned) == 1
        without = asyncio.run(engine.generate(messages, SamplingParams(
            max_tokens=4, temperature=0, top_p=1, logit_bias=((banned[0], -100.0),))))
        forced_id = engine.model.tokenize(" zebra", add_bos=False)[0]
        forced = asyncio.run(engine.generate(messages, SamplingParams(
            max_tokens=2, temperature=0, top_p=1, logit_bias=((forced_id, 100.0),))))
        forced_text = engine.model.piece(forced_id).decode()
    finally:
        engine.close()
    assert first.text.startswith(first_token.token)
    assert not without.text.startswith(first_token.token)
    assert forced.text.startswith(forced_text)


def test_n_choices_with_sampling(openai_client, chat_model_id):
    """Choice i draws with seed + i, so the choices differ. A repeat is not asserted equal: a
    seed is best effort (README): prefix reuse and batching change the logits' last bits."""
    response = openai_client.chat.completions.create(
        model=chat_model_id, n=3, max_tokens=12, temperature=1.0, seed=9,
        messages=[{"role": "user", "content": "Name an animal."}])
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert len({c.message.content for c in response.choices}) >= 2
    assert all(c.message.content and c.finish_reason in ("stop", "length")
               for c in response.choices)
    assert 3 <= response.usage.completion_tokens <= 3 * 12  # all three, within the budget


def test_legacy_completions_plain_and_streaming(openai_client, chat_model_id):
    plain = openai_client.completions.create(model=chat_model_id, prompt="The capital of France is",
                                             max_tokens=8, temperature=0)
    assert plain.object == "text_completion"
    assert plain.usage.completion_tokens == 8 and plain.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in openai_client.completions.create(
        model=chat_model_id, prompt="The capital of France is", max_tokens=8, temperature=0,
        stream=True) if c.choices)
    assert streamed == plain.choices[0].text


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                   "properties": {"city": {"type": "string"}}}}}


@pytest.mark.parametrize("stream", [False, True])
def test_a_required_tool_call_always_parses_and_validates(openai_client, chat_model_id, stream):
    request = dict(model=chat_model_id, max_tokens=60, temperature=0, tools=[WEATHER_TOOL],
                   tool_choice="required",
                   messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    if stream:
        chunks = [c for c in openai_client.chat.completions.create(**request, stream=True)
                  if c.choices]
        calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
        name, arguments = calls[0].function.name, calls[0].function.arguments
        finish = chunks[-1].choices[0].finish_reason
    else:
        choice = openai_client.chat.completions.create(**request).choices[0]
        assert choice.message.content is None
        name = choice.message.tool_calls[0].function.name
        arguments = choice.message.tool_calls[0].function.arguments
        finish = choice.finish_reason
    assert finish == "tool_calls" and name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])
