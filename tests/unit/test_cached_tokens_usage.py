"""``usage.prompt_tokens_details.cached_tokens``: what the engine says its prefix cache held,
on chat completions and legacy completions, whole and streamed, valid against OpenAI's
schemas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.engines.chat.base import GenerationChunk, SamplingParams
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with
from tests.openai_schema import assert_matches_openai


class CachingEngine(FakeChatEngine):
    """Reports all but the last prompt token as cached, as a slot that held the prefix."""

    def stream_tokens(self, prompt: list[int], params: SamplingParams,
                      ) -> AsyncIterator[GenerationChunk]:
        return self._with_cache(super().stream_tokens(prompt, params), len(prompt) - 1)

    @staticmethod
    async def _with_cache(chunks: AsyncIterator[GenerationChunk],
                          cached: int) -> AsyncIterator[GenerationChunk]:
        async for chunk in chunks:
            if chunk.finish_reason is not None:
                chunk.cached_tokens = cached
            yield chunk


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings(), registry_with(CachingEngine(reply="hi there"))))


def data_lines(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: {")]


CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "one two three four"}]}


def test_chat_usage_reports_cached_tokens():
    plain = TestClient(create_app(Settings(), registry_with(FakeChatEngine())))
    body = plain.post("/v1/chat/completions", json=CHAT).json()
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert_matches_openai(body, "CreateChatCompletionResponse")


def test_chat_cached_tokens_whole_and_streamed(client):
    body = client.post("/v1/chat/completions", json=CHAT).json()
    assert body["usage"]["prompt_tokens"] == 4
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    assert_matches_openai(body, "CreateChatCompletionResponse")
    streamed = client.post("/v1/chat/completions", json={
        **CHAT, "stream": True, "stream_options": {"include_usage": True}})
    chunks = data_lines(streamed)
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    for chunk in chunks:
        assert_matches_openai(chunk, "CreateChatCompletionStreamResponse")


def test_completions_cached_tokens_sum_over_prompts_whole_and_streamed(client):
    request = {"model": "fake-chat", "prompt": ["a b c", "d e f g h"], "n": 2}
    body = client.post("/v1/completions", json=request).json()
    assert body["usage"]["prompt_tokens"] == 8
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 2 + 4}
    assert_matches_openai(body, "CreateCompletionResponse")
    streamed = client.post("/v1/completions", json={
        **request, "stream": True, "stream_options": {"include_usage": True}})
    last = data_lines(streamed)[-1]
    assert last["usage"]["prompt_tokens_details"] == {"cached_tokens": 6}
    assert_matches_openai(last, "CreateCompletionResponse")
