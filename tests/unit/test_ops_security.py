"""API keys, rate limiting, CORS and the request body limit: each off by default, each on."""

from __future__ import annotations

import asyncio
import json
import logging

import openai
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from labs_api.app import create_app
from labs_api.settings import Settings, describe_error
from tests.fakes import FakeChatEngine, registry_with

MODEL = "fake-chat"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
OPEN_PATHS = ["/health", "/ready", "/docs", "/redoc", "/openapi.json", "/metrics"]


def make_client(client_address: str = "testclient", **settings) -> TestClient:
    app = create_app(Settings(**settings), registry_with(FakeChatEngine(MODEL)))
    return TestClient(app, client=(client_address, 50000))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- API keys -------------------------------------------------------------------------------


def test_without_keys_the_api_is_open():
    client = make_client()
    assert client.get("/v1/models").status_code == 200
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_with_a_key_a_request_without_one_gets_401_in_openai_shape():
    client = make_client(api_key="s3cret-key")
    for response in (client.get("/v1/models"), client.post("/v1/chat/completions", json=CHAT)):
        assert response.status_code == 401
        assert response.json() == {"error": {
            "message": response.json()["error"]["message"], "type": "invalid_request_error",
            "param": None, "code": "invalid_api_key"}}
        assert "Authorization" in response.json()["error"]["message"]
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_wrong_key_gets_401_and_is_never_echoed(caplog):
    client = make_client(api_key="s3cret-key")
    caplog.set_level(logging.DEBUG)
    for headers in (bearer("wrong-key-123"), {"Authorization": "Basic wrong-key-123"},
                    bearer("s3cret-key-but-longer"), bearer("s3cret-ke")):
        response = client.get("/v1/models", headers=headers)
        assert response.status_code == 401, headers
        assert "wrong-key-123" not in response.text and "s3cret" not in response.text
    assert "wrong-key-123" not in caplog.text and "s3cret" not in caplog.text


def test_the_right_key_gets_200_and_the_log_names_it_by_number_only(caplog):
    client = make_client(api_key="first-key, second-key")
    caplog.set_level(logging.INFO, logger="labs_api.access")
    assert client.get("/v1/models", headers=bearer("first-key")).status_code == 200
    response = client.post("/v1/chat/completions", json=CHAT, headers=bearer("second-key"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]
    assert "api_key_number=2" in caplog.records[-1].getMessage()
    assert "first-key" not in caplog.text and "second-key" not in caplog.text


def test_health_ready_metrics_and_docs_stay_open_with_keys():
    client = make_client(api_key="s3cret-key")
    for path in OPEN_PATHS:
        assert client.get(path).status_code == 200, path
    assert client.get("/health").json() == {"status": "ok"}


def test_keys_from_a_file_with_comments_and_blank_lines(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nalpha-key\n\n  beta-key  \n")
    client = make_client(api_key_file=str(key_file))
    assert client.get("/v1/models", headers=bearer("alpha-key")).status_code == 200
    assert client.get("/v1/models", headers=bearer("beta-key")).status_code == 200
    assert client.get("/v1/models", headers=bearer("# team keys")).status_code == 401
    assert client.get("/v1/models").status_code == 401


def test_a_key_file_without_keys_stops_start_up(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("# nothing yet\n\n")
    with pytest.raises(SystemExit, match="hold no key"):
        make_client(api_key_file=str(key_file))


def test_a_missing_key_file_is_a_settings_error(tmp_path):
    with pytest.raises(ValidationError) as info:
        Settings(api_key_file=str(tmp_path / "absent"))
    assert "LABS_API_KEY_FILE" in describe_error(info.value)


def test_the_api_key_is_not_in_the_settings_repr():
    assert "s3cret" not in repr(Settings(api_key="s3cret-key"))


def test_openapi_declares_the_bearer_key_so_docs_can_send_it():
    schema = make_client(api_key="k").get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/chat/completions"]["post"]["security"] == [{"APIKey": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_the_official_client_raises_authentication_error_then_succeeds():
    http = make_client(api_key="s3cret-key")
    wrong = openai.OpenAI(base_url="http://testserver/v1", api_key="nope", http_client=http,
                          max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    right = openai.OpenAI(base_url="http://testserver/v1", api_key="s3cret-key",
                          http_client=http, max_retries=0)
    assert [m.id for m in right.models.list()] == [MODEL]


# --- rate limiting ---------------------------------------------------------------------------


def test_without_a_rate_limit_nothing_is_refused():
    client = make_client()
    assert {client.get("/v1/models").status_code for _ in range(30)} == {200}


def test_past_the_limit_429_with_retry_after_in_openai_shape():
    client = make_client(rate_limit="3/minute")
    assert [client.get("/v1/models").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "3 requests per minute" in error["message"]
    # Probes and metrics are not limited.
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_the_limit_is_per_key():
    client = make_client(api_key="k1,k2", rate_limit="2/minute")
    assert [client.get("/v1/models", headers=bearer("k1")).status_code
            for _ in range(3)] == [200, 200, 429]
    # A wrong key is refused as unauthenticated and uses nobody's budget.
    assert client.get("/v1/models", headers=bearer("k3")).status_code == 401
    assert [client.get("/v1/models", headers=bearer("k2")).status_code
            for _ in range(3)] == [200, 200, 429]


def test_without_keys_the_limit_is_per_client_address():
    first = make_client(client_address="10.0.0.1", rate_limit="1/minute")
    second = TestClient(first.app, client=("10.0.0.2", 50000))
    assert [first.get("/v1/models").status_code for _ in range(2)] == [200, 429]
    assert second.get("/v1/models").status_code == 200


def test_the_official_client_raises_rate_limit_error():
    http = make_client(rate_limit="1/minute")
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http,
                           max_retries=0)
    client.models.list()
    with pytest.raises(openai.RateLimitError):
        client.models.list()


@pytest.mark.parametrize("rate", ["60/fortnight", "lots", "-1/minute"])
def test_a_bad_rate_is_a_settings_error_naming_the_variable(rate):
    with pytest.raises(ValidationError) as info:
        Settings(rate_limit=rate)
    assert "LABS_RATE_LIMIT" in describe_error(info.value)


def test_several_limits_at_once():
    client = make_client(rate_limit="100/minute;2/hour")
    assert [client.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]


# --- CORS ------------------------------------------------------------------------------------

ALLOWED = "http://app.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type"}


def test_without_origins_no_cors_headers():
    client = make_client()
    response = client.get("/v1/models", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options("/v1/chat/completions", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_headers_only_for_allowed_origins():
    client = make_client(cors_origins=f"{ALLOWED}, http://other.example")
    allowed = client.get("/v1/models", headers={"Origin": ALLOWED})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    denied = client.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in denied.headers


def test_preflight_needs_no_key_and_refusals_carry_cors_headers():
    client = make_client(cors_origins=ALLOWED, api_key="k")
    preflight = client.options("/v1/chat/completions", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    refused = client.post("/v1/chat/completions", json=CHAT, headers={"Origin": ALLOWED})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ALLOWED
    bad_preflight = client.options("/v1/chat/completions",
                                   headers={"Origin": "http://evil.example", **PREFLIGHT})
    assert "access-control-allow-origin" not in bad_preflight.headers


# --- request body size -----------------------------------------------------------------------


def big_chat(n_bytes: int) -> bytes:
    body = dict(CHAT, messages=[{"role": "user", "content": "x" * n_bytes}])
    return json.dumps(body).encode()


def test_a_body_past_the_limit_gets_413_in_openai_shape():
    client = make_client(max_body_bytes=1000)
    response = client.post("/v1/chat/completions", content=big_chat(2000),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_the_default_limit_is_ten_mebibytes():
    assert Settings().max_body_bytes == 10 * 1024 * 1024
    client = make_client()
    over = client.post("/v1/chat/completions", content=big_chat(10 * 1024 * 1024 + 10),
                       headers={"Content-Type": "application/json"})
    assert over.status_code == 413


def test_zero_turns_the_limit_off():
    client = make_client(max_body_bytes=0)
    response = client.post("/v1/chat/completions", content=big_chat(11 * 1024 * 1024),
                           headers={"Content-Type": "application/json"})
    assert response.status_code != 413


async def post_in_chunks(app, chunks: list[bytes]) -> tuple[int, dict, int]:
    """POST without Content-Length (as a chunked upload arrives), straight through ASGI.
    Returns the status, the JSON body and how many chunks were never read."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {}}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), len(messages)


def test_a_chunked_body_is_counted_as_it_arrives():
    app = create_app(Settings(max_body_bytes=1000), registry_with(FakeChatEngine(MODEL)))
    body = big_chat(2500)
    chunks = [body[i:i + 500] for i in range(0, len(body), 500)]
    status, payload, unread = asyncio.run(post_in_chunks(app, chunks))
    assert status == 413 and payload["error"]["code"] == "request_too_large"
    assert unread == len(chunks) - 3  # reading stopped at the chunk that crossed 1000 bytes
    # The same upload under the limit goes through.
    small = json.dumps(CHAT).encode()
    status, payload, unread = asyncio.run(post_in_chunks(app, [small[:10], small[10:]]))
    assert status == 200 and payload["object"] == "chat.completion" and unread == 0


def test_httpx_streamed_upload_is_refused_too():
    client = make_client(max_body_bytes=1000)
    body = big_chat(5000)

    def chunks():
        for i in range(0, len(body), 256):
            yield body[i:i + 256]

    response = client.post("/v1/chat/completions", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_settings_defaults_are_off():
    settings = Settings()
    assert settings.api_keys() == [] and settings.rate_limit is None
    assert settings.cors_origin_list() == [] and settings.metrics is True


def test_blank_variables_mean_unset(monkeypatch):
    monkeypatch.setenv("LABS_API_KEY", "")
    monkeypatch.setenv("LABS_RATE_LIMIT", " ")
    settings = Settings()
    assert settings.api_keys() == [] and settings.rate_limit is None
    assert make_client().get("/v1/models").status_code == 200

