"""/tokenize and /detokenize, cached_tokens and /v1/audio/voices on the real server with the
bundled models (SmolLM2 on llama.cpp, the Piper voice)."""

from __future__ import annotations

import httpx
import pytest

from tests.openai_schema import assert_matches_openai

pytestmark = pytest.mark.slow


def post(base_url: str, path: str, **body) -> dict:
    response = httpx.post(f"{base_url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_tokenize_and_detokenize_round_trip_with_pieces(base_url):
    text = "Hello world, ça va? 🙂"
    tokens = post(base_url, "/tokenize", content=text)["tokens"]
    assert len(tokens) > 4 and all(isinstance(t, int) for t in tokens)
    assert post(base_url, "/detokenize", tokens=tokens)["content"] == text
    pieces = post(base_url, "/tokenize", content=text, with_pieces=True)["tokens"]
    assert [p["id"] for p in pieces] == tokens
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"])
                      for p in pieces)
    assert joined.decode("utf-8") == text
    assert any(isinstance(p["piece"], list) for p in pieces)  # the emoji spans tokens


def test_special_token_text_is_parsed_and_max_model_len_is_the_request_context(base_url):
    body = post(base_url, "/tokenize", content="<|im_start|>user")
    assert body["count"] < 4  # <|im_start|> is one token
    # the most one request may hold: the shared KV cache (8 x 2048) capped at SmolLM2's 8192
    assert body["max_model_len"] == 8192
    listed = httpx.get(f"{base_url}/v1/models").json()["data"]
    assert body["max_model_len"] in {m.get("context_length") for m in listed}


def test_messages_count_what_a_chat_completion_bills(base_url, chat_model_id):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a colour."}]
    counted = post(base_url, "/tokenize", messages=messages)
    chat = post(base_url, "/v1/chat/completions", model=chat_model_id, messages=messages,
                max_tokens=3, temperature=0)
    assert counted["count"] == chat["usage"]["prompt_tokens"]
    text = post(base_url, "/detokenize", tokens=counted["tokens"])["content"]
    assert "Name a colour." in text and "You are terse." in text


def test_bad_token_ids_are_400(base_url):
    response = httpx.post(f"{base_url}/detokenize", json={"tokens": [10**9]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "tokens"


def test_a_follow_up_turn_reports_cached_prompt_tokens(base_url, chat_model_id):
    first_turn = [{"role": "system", "content": "You are a helpful assistant who answers in "
                                                "one short sentence about geography."},
                  {"role": "user", "content": "What is the capital of France?"}]
    first = post(base_url, "/v1/chat/completions", model=chat_model_id, messages=first_turn,
                 max_tokens=12, temperature=0)
    assert_matches_openai(first, "CreateChatCompletionResponse")
    answer = first["choices"][0]["message"]["content"]
    follow_up = [*first_turn, {"role": "assistant", "content": answer},
                 {"role": "user", "content": "And of Italy?"}]
    second = post(base_url, "/v1/chat/completions", model=chat_model_id, messages=follow_up,
                  max_tokens=12, temperature=0)
    assert_matches_openai(second, "CreateChatCompletionResponse")
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["usage"]["prompt_tokens"] - 2  # the first turn's prompt, reused
    assert cached < second["usage"]["prompt_tokens"]


def test_streamed_usage_and_completions_report_cached_tokens(openai_client, chat_model_id):
    prompt = "The quick brown fox jumps over the lazy dog. " * 6
    openai_client.completions.create(model=chat_model_id, prompt=prompt, max_tokens=2)
    again = openai_client.completions.create(model=chat_model_id, prompt=prompt + "Then",
                                             max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens > 40
    messages = [{"role": "user", "content": prompt}]
    openai_client.chat.completions.create(model=chat_model_id, messages=messages, max_tokens=2)
    stream = openai_client.chat.completions.create(
        model=chat_model_id, messages=messages, max_tokens=2, stream=True,
        stream_options={"include_usage": True})
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert usage[-1].prompt_tokens_details.cached_tokens > 40


def test_voices_lists_the_bundled_piper_voice(base_url):
    response = httpx.get(f"{base_url}/v1/audio/voices")
    assert response.status_code == 200
    body = response.json()
    (voice,) = body["data"]
    assert voice["model"] == "en_US-joe-medium" and voice["id"] in body["voices"]
    assert voice["language"] == "en_US" and voice["sample_rate"] == 22_050
    assert "alloy" in voice["openai_voices"]
    speech = httpx.post(f"{base_url}/v1/audio/speech", timeout=120, json={
        "model": "tts-1", "input": "Hi.", "voice": voice["id"], "response_format": "wav"})
    assert speech.status_code == 200 and speech.content[:4] == b"RIFF"
