"""Hostile requests against the real server on the bundled models: each is refused with a 4xx
whose OpenAI error body names the field or the limit, /health keeps answering while it is
handled, and the next good request is answered correctly."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.hostile.health import watching_health

pytestmark = pytest.mark.slow

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HEALTH_P99_MS = 50.0


@pytest.fixture(scope="module")
def client(hostile_url) -> httpx.Client:
    with httpx.Client(base_url=hostile_url, timeout=120) as client:
        yield client


def post_raw(client: httpx.Client, path: str, body: bytes,
             content_type: str = "application/json") -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": content_type})


def assert_error(response: httpx.Response, status: int, param: str | None, *words: str) -> None:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error["message"]


def assert_still_serving(client: httpx.Client, chat_model: str) -> None:
    """/health answers and a good chat request gets a real answer."""
    assert client.get("/health").json() == {"status": "ok"}
    response = client.post("/v1/chat/completions", json={
        "model": chat_model, "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8, "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert 1 <= body["usage"]["completion_tokens"] <= 8


def chat_body(model: str, **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}


def raw(body: dict, **literals: str) -> bytes:
    """``body`` as JSON with each ``literals`` value put in as written (NaN, "\\ud800", ...)."""
    text = json.dumps(body)
    for key, literal in literals.items():
        text = text.replace(json.dumps(f"@{key}@"), literal)
    return text.encode()


# -- strings that are not valid Unicode, and NUL ---------------------------------------------

def surrogate_cases(chat_model: str) -> list[tuple[str, bytes, str]]:
    s = '"a\\ud800b"'
    return [
        ("/v1/chat/completions", raw({"model": "@m@", "messages": [
            {"role": "user", "content": "hi"}]}, m=s), "model"),
        ("/v1/chat/completions", raw({"model": chat_model, "messages": [
            {"role": "@r@", "content": "hi"}]}, r=s), "messages.0.role"),
        ("/v1/chat/completions", raw({"model": chat_model, "messages": [
            {"role": "user", "content": "@c@"}]}, c=s), "messages.0.content"),
        ("/v1/completions", raw({"model": chat_model, "prompt": "@p@"}, p=s), "prompt"),
        ("/v1/embeddings", raw({"model": EMBEDDING_MODEL, "input": ["ok", "@i@"]}, i=s),
         "input.1"),
        ("/v1/tts", raw({"text": "@t@"}, t=s), "text"),
        ("/v1/audio/speech", raw({"model": "tts-1", "voice": "alloy", "input": "@t@"}, t=s),
         "input"),
    ]


def test_lone_surrogates_in_any_string_are_422s_naming_the_field(client, chat_model):
    for path, body, param in surrogate_cases(chat_model):
        response = post_raw(client, path, body)
        assert_error(response, 422, param, "lone UTF-16 surrogate")
        assert response.json()["detail"][0]["loc"] == ["body", *[
            int(p) if p.isdigit() else p for p in param.split(".")]]
    assert_still_serving(client, chat_model)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/tts", {"text": "Hello @n@ world"}, "text"),
    ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "Hello. @n@ World."},
     "input"),
])
def test_nul_in_speech_text_is_a_422_not_a_cut_off_200(client, chat_model, path, body, param):
    text = json.dumps(body).replace("@n@", "\\u0000").encode()
    response = post_raw(client, path, text)
    assert_error(response, 422, param, "NUL")
    assert response.headers["content-type"] == "application/json"
    good = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy",
                                                  "input": "Hello world.",
                                                  "response_format": "wav"})
    assert good.status_code == 200 and good.content[:4] == b"RIFF"
    assert len(good.content) > 22_050  # more than half a second of 16-bit audio
    assert_still_serving(client, chat_model)


# -- numbers that are not finite or do not fit ----------------------------------------------

@pytest.mark.parametrize(("path", "field", "literal"), [
    ("/v1/chat/completions", "temperature", "NaN"),
    ("/v1/chat/completions", "temperature", "Infinity"),
    ("/v1/chat/completions", "max_tokens", "1e999"),
    ("/v1/chat/completions", "top_p", "-Infinity"),
    ("/v1/chat/completions", "seed", "123456789012345678901234567890"),
    ("/v1/completions", "max_tokens", "1e999"),
    ("/v1/audio/speech", "speed", "NaN"),
    ("/v1/audio/speech", "speed", "1e999"),
])
def test_non_finite_numbers_are_422s_naming_the_field(client, chat_model, path, field, literal):
    base = {"/v1/chat/completions": chat_body(chat_model),
            "/v1/completions": {"model": chat_model, "prompt": "hi"},
            "/v1/audio/speech": {"model": "tts-1", "voice": "alloy", "input": "hi"}}[path]
    response = post_raw(client, path, raw({**base, field: f"@{field}@"}, **{field: literal}))
    assert_error(response, 422, field)
    assert "finite number" in response.text or "64-bit" in response.text
    assert_still_serving(client, chat_model)


# -- bodies that are not UTF-8 JSON ---------------------------------------------------------

def test_a_text_plain_body_that_is_not_utf8_is_a_415(client, chat_model):
    response = post_raw(client, "/v1/chat/completions", b"\xff\xfe\x00h\x00i", "text/plain")
    assert_error(response, 415, None, "application/json", "text/plain")
    response = post_raw(client, "/v1/chat/completions",
                        json.dumps(chat_body(chat_model)).encode("utf-16"))
    assert_error(response, 400, None, "not valid UTF-8")
    assert_still_serving(client, chat_model)


# -- cheap limits before heavy work, with /health watched -------------------------------------

def refused_while_watched(client: httpx.Client, base_url: str, path: str, body: bytes,
                          label: str, times: int = 3) -> tuple[httpx.Response, float]:
    """Send ``body`` ``times`` times while /health is watched from another process; return
    the answer and the p99 latency. A p99 over the bound is measured once more, and the better
    of the two returned: other jobs on a shared 2-core machine stall the server now and then,
    while a refusal that blocked the event loop (hundreds of ms each time) fails both."""
    p99s = []
    for _ in range(2):
        with watching_health(base_url) as health:
            responses = [post_raw(client, path, body) for _ in range(times)]
        assert len({(r.status_code, r.text) for r in responses}) == 1  # the same each time
        print(f"\n{label} ({len(body) / 1e6:.2f} MB) x{times}: {responses[0].status_code}; "
              f"{health.summary()}")
        assert health.failures == []
        assert len(health.samples_ms) >= 30
        p99s.append(health.percentile(99))
        if p99s[-1] < HEALTH_P99_MS:
            break
    return responses[0], min(p99s)


def test_200000_messages_are_refused_cheaply(client, hostile_url, chat_model):
    """The parse itself stops at 65,536 objects; a count under that meets LABS_MAX_MESSAGES."""
    body = json.dumps({"model": chat_model, "messages": [{"role": "user", "content": "word"}]
                       * 200_000}, separators=(",", ":")).encode()
    response, p99 = refused_while_watched(client, hostile_url, "/v1/chat/completions", body,
                                          "200,000 messages")
    assert_error(response, 400, None, "more than 65536 JSON objects")
    assert response.json()["error"]["code"] == "limit_exceeded"
    assert p99 < HEALTH_P99_MS
    body = json.dumps({"model": chat_model, "messages": [{"role": "user", "content": "word"}]
                       * 20_000}, separators=(",", ":")).encode()
    response, p99 = refused_while_watched(client, hostile_url, "/v1/chat/completions", body,
                                          "20,000 messages")
    assert_error(response, 400, "messages", "20000 messages", "at most 4096",
                 "LABS_MAX_MESSAGES")
    assert p99 < HEALTH_P99_MS
    assert_still_serving(client, chat_model)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_4_mb_prompt_is_refused_before_tokenizing(client, hostile_url, chat_model, path):
    text = "lorem ipsum " * 350_000
    payload = (chat_body(chat_model, messages=[{"role": "user", "content": text}])
               if path == "/v1/chat/completions" else {"model": chat_model, "prompt": text})
    response, p99 = refused_while_watched(client, hostile_url, path, json.dumps(payload).encode(),
                                          f"4 MB prompt on {path}")
    assert_error(response, 400, "messages" if "chat" in path else "prompt",
                 "4200000 characters", "LABS_MAX_PROMPT_CHARS")
    assert p99 < HEALTH_P99_MS
    assert_still_serving(client, chat_model)


def similar_names_schema(count: int, required: bool = True) -> dict:
    props = {f"customer_record_field_name_{i:05d}": {"type": "string",
                                                     "description": "a field"}
             for i in range(count)}
    return {"type": "object", "properties": props, "required": list(props) if required else []}


def test_a_large_json_schema_is_refused_before_building_a_grammar(client, hostile_url,
                                                                  chat_model):
    schema = similar_names_schema(2000)
    body = json.dumps(chat_body(chat_model, response_format={
        "type": "json_schema", "json_schema": {"name": "big", "schema": schema}})).encode()
    assert 200_000 < len(body) < 300_000
    response, p99 = refused_while_watched(client, hostile_url, "/v1/chat/completions", body,
                                          "0.23 MB schema of similar property names")
    assert_error(response, 400, "response_format.json_schema.schema", "2000 schema properties",
                 "LABS_MAX_SCHEMA_PROPERTIES")
    assert p99 < HEALTH_P99_MS
    tools = [{"type": "function", "function": {"name": "f", "parameters": similar_names_schema(
        100, required=False)}}]
    response = client.post("/v1/chat/completions", json=chat_body(chat_model, tools=tools,
                                                                  tool_choice="required"))
    assert_error(response, 400, "tools.0.function.parameters", "100 optional properties",
                 "at most 64 per object")
    assert_still_serving(client, chat_model)


def test_completions_cap_generations_per_request(client, chat_model):
    response = client.post("/v1/completions", json={"model": chat_model, "prompt": ["Hi"] * 16,
                                                    "n": 8, "max_tokens": 1})
    assert_error(response, 400, "n", "128 generations", "at most 16")
    ok = client.post("/v1/completions", json={"model": chat_model, "prompt": ["Hi", "Yo"],
                                              "n": 8, "max_tokens": 2, "temperature": 0})
    assert ok.status_code == 200, ok.text
    assert sorted(c["index"] for c in ok.json()["choices"]) == list(range(16))
    assert_still_serving(client, chat_model)


def test_a_long_prompt_under_the_limit_is_tokenized_off_the_event_loop(client, hostile_url,
                                                                       chat_model):
    """Allowed by the limits, too long for the context: tokenized (0.5 MB of text), then 400.
    The figures are printed; /health must keep answering, within a second at worst."""
    payload = chat_body(chat_model, messages=[{"role": "user", "content": "lorem ipsum " *
                                               80_000}])
    with watching_health(hostile_url) as health:
        response = client.post("/v1/chat/completions", json=payload)
    print(f"\n0.96 MB prompt within the limits: {response.status_code}; {health.summary()}")
    assert_error(response, 400, "messages", "tokens")
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert health.failures == [] and health.percentile(100) < 1000
    assert_still_serving(client, chat_model)


# -- the two /v1/completions bugs -----------------------------------------------------------

def test_a_single_long_stop_string_is_accepted(client, chat_model):
    response = client.post("/v1/completions", json={
        "model": chat_model, "prompt": "The capital of France is", "max_tokens": 30,
        "temperature": 0, "stop": "\n\nThe end of the sentence"})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")


#: "Hello world, how are you? Café ☕" in the bundled SmolLM2's vocabulary.
BUNDLED_TOKENS = [19556, 905, 28, 638, 359, 346, 47, 48031, 2756, 4636, 242, 239]
BUNDLED_TEXT = "Hello world, how are you? Café ☕"


def test_echo_of_a_token_id_prompt_returns_its_text(client, chat_model):
    response = client.post("/v1/completions", json={
        "model": chat_model, "prompt": [BUNDLED_TOKENS, BUNDLED_TOKENS[:5]], "max_tokens": 3,
        "echo": True, "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    first, second = body["choices"]
    assert first["text"].startswith(BUNDLED_TEXT) and len(first["text"]) > len(BUNDLED_TEXT)
    assert second["text"].startswith("Hello world, how are")
    assert body["usage"]["prompt_tokens"] == len(BUNDLED_TOKENS) + 5
    as_text = client.post("/v1/completions", json={
        "model": chat_model, "prompt": BUNDLED_TEXT, "max_tokens": 3, "echo": True,
        "temperature": 0}).json()
    assert as_text["choices"][0]["text"] == first["text"]  # same prompt, same greedy answer
