"""The real server on the bundled SmolLM2 GGUF, driven by the official openai client and curl."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.openai_schema import assert_matches_openai

SPEC = Path(__file__).parents[1] / "data" / "API_REFERENCE.md"


def test_models_lists_the_bundled_chat_model(base_url):
    body = httpx.get(f"{base_url}/v1/models").json()
    assert_matches_openai(body, "ListModelsResponse")
    assert "SmolLM2-135M-Instruct" in [m["id"] for m in body["data"]]


def test_openai_client_plain_completion(openai_client, chat_model_id):
    response = openai_client.chat.completions.create(
        model=chat_model_id,
        messages=[{"role": "user",
                   "content": "What is the capital city of France? Answer in one word."}],
        max_tokens=40,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > 10  # the chat template adds a system prompt
    assert 0 < response.usage.completion_tokens <= 40
    assert response.usage.total_tokens == (response.usage.prompt_tokens
                                           + response.usage.completion_tokens)


def test_openai_client_streaming_matches_plain_greedy_output(openai_client, chat_model_id):
    request = dict(model=chat_model_id, max_tokens=30, temperature=0,
                   messages=[{"role": "user", "content": "Name three colours."}])
    plain = openai_client.chat.completions.create(**request)
    stream = openai_client.chat.completions.create(**request, stream=True,
                                                   stream_options={"include_usage": True})
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == plain.choices[0].finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_max_tokens_gives_finish_reason_length_and_exact_count(openai_client, chat_model_id):
    response = openai_client.chat.completions.create(
        model=chat_model_id, max_tokens=5, temperature=0,
        messages=[{"role": "user", "content": "Tell me a long story about dragons."}])
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5


def test_stop_sequence_ends_the_reply_before_it(openai_client, chat_model_id):
    request = dict(model=chat_model_id, max_tokens=40, temperature=0,
                   messages=[{"role": "user", "content": "Count from 1 to 10."}])
    full = openai_client.chat.completions.create(**request).choices[0].message.content
    assert "4" in full
    cut = openai_client.chat.completions.create(**request, stop=["4"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index("4")]


def test_seed_makes_sampling_repeatable(openai_client, chat_model_id):
    request = dict(model=chat_model_id, max_tokens=20, temperature=1.0, seed=1234,
                   messages=[{"role": "user", "content": "Write a random word."}])
    first = openai_client.chat.completions.create(**request).choices[0].message.content
    second = openai_client.chat.completions.create(**request).choices[0].message.content
    assert first == second


def test_openai_client_raises_not_found_for_an_unknown_model(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-4o" in str(raised.value)


def test_prompt_beyond_the_context_is_400(openai_client, chat_model_id):
    import openai

    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.chat.completions.create(
            model=chat_model_id, messages=[{"role": "user", "content": "word " * 9000}])  # > 8192
    assert "context" in str(raised.value)


def spec_curl_commands(model_id: str) -> list[list[str]]:
    """The spec's chat curl examples, with the served model id substituted."""
    text = SPEC.read_text()
    block = text.split("### cURL Examples", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [c.strip() for c in block.split("\n\n") if "/v1/chat/completions" in c]
    result = []
    for command in commands:
        command = "\n".join(line for line in command.splitlines()
                            if not line.startswith("#"))
        command = command.replace("TinyLlama/TinyLlama-1.1B-Chat-v1.0", model_id)
        result.append(command)
    return result


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_specs_curl_examples_work(base_url, chat_model_id):
    commands = spec_curl_commands(chat_model_id)
    assert len(commands) == 2  # plain and streaming
    plain, streaming = commands
    port = base_url.rsplit(":", 1)[1]
    run = lambda c: subprocess.run(  # noqa: E731
        ["bash", "-c", c.replace("localhost:8000", f"127.0.0.1:{port}")],
        capture_output=True, text=True, timeout=120, check=True).stdout
    body = json.loads(run(plain))
    assert_matches_openai(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["message"]["content"]
    events = [e for e in run(streaming).split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    for chunk in chunks:
        assert_matches_openai(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert re.search(r"\w", "".join(c["choices"][0]["delta"].get("content", "")
                                    for c in chunks))


def test_health_answers_quickly_while_generations_run(base_url, chat_model_id):
    async def scenario() -> tuple[list[dict], list[float]]:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
            body = {"model": chat_model_id, "max_tokens": 60, "temperature": 0,
                    "messages": [{"role": "user", "content": "Describe the sea."}]}
            jobs = [asyncio.create_task(client.post("/v1/chat/completions", json=body))
                    for _ in range(4)]
            await asyncio.sleep(0.3)
            health_times = []
            for _ in range(3):
                started = time.perf_counter()
                response = await client.get("/health")
                health_times.append(time.perf_counter() - started)
                assert response.json() == {"status": "ok"}
            results = [r.json() for r in await asyncio.gather(*jobs)]
            return results, health_times

    results, health_times = asyncio.run(scenario())
    assert max(health_times) < 1.0
    # All four completed. (Not necessarily with the same text: with the shared KV cache, the
    # cells each batched sequence lands in change the float rounding of its attention.)
    assert len(results) == 4
    for result in results:
        assert result["choices"][0]["message"]["content"], result
        assert result["choices"][0]["finish_reason"] in ("stop", "length")


def _thread_events(base_url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text):
        if family.name == "labs_engine_ipc_thread_events":
            return sum(s.value for s in family.samples
                       if s.labels.get("model") == "SmolLM2-135M-Instruct")
    raise AssertionError("no labs_engine_ipc_thread_events in /metrics")


def test_streamed_tokens_leave_from_the_decode_thread_in_order(base_url, openai_client,
                                                               chat_model_id):
    """Two choices streamed together: each choice's text equals the plain greedy answer, and
    the worker's decode thread sent the tokens itself (the outlet path), not its loop."""
    request = dict(model=chat_model_id, max_tokens=24, temperature=0,
                   messages=[{"role": "user", "content": "Count from one to twenty."}])
    plain = openai_client.chat.completions.create(**request).choices[0].message.content
    time.sleep(1.2)  # the worker reports its counts once a second
    before = _thread_events(base_url)
    stream = openai_client.chat.completions.create(**request, n=2, stream=True)
    texts = ["", ""]
    deltas = 0
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                texts[choice.index] += choice.delta.content
                deltas += 1
    assert texts == [plain, plain]
    deadline = time.monotonic() + 5
    while (sent := _thread_events(base_url) - before) < deltas - 2 and time.monotonic() < deadline:
        time.sleep(0.25)
    # Every chunk but each choice's last one went out from the decode thread.
    assert deltas - 2 <= sent <= deltas, (sent, deltas)
