"""/metrics, the access log line and X-Request-ID."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from labs_api.app import create_app
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with

MODEL = "fake-chat"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50}


def make_client(engine: FakeChatEngine | None = None, **settings) -> TestClient:
    engine = engine or FakeChatEngine(MODEL)
    return TestClient(create_app(Settings(**settings), registry_with(engine)),
                      raise_server_exceptions=False)


def sample(client: TestClient, name: str, **labels: str) -> float | None:
    """One sample's value, read back through GET /metrics as Prometheus would."""
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


HTTP = "labs_http_requests_total"


def test_metrics_are_prometheus_text_with_process_memory():
    response = make_client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"process_resident_memory_bytes", "labs_http_requests",
            "labs_http_request_duration_seconds", "labs_chat_time_to_first_token_seconds",
            "labs_model_ready"} <= names


def test_request_count_latency_and_errors_move_per_route_template():
    client = make_client()
    labels = {"method": "GET", "endpoint": "/v1/models/{model_id}"}
    assert sample(client, HTTP, **labels, status="200") is None
    client.get(f"/v1/models/{MODEL}")
    client.get(f"/v1/models/{MODEL}")
    client.get("/v1/models/not-served")
    assert sample(client, HTTP, **labels, status="200") == 2
    assert sample(client, HTTP, **labels, status="404") == 1
    assert sample(client, "labs_http_request_errors_total", **labels, status="404") == 1
    assert sample(client, "labs_http_request_errors_total", **labels, status="200") is None
    assert sample(client, "labs_http_request_duration_seconds_count", **labels,
                  status="200") == 2
    # Raw paths never become labels: unknown paths share one series.
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    assert sample(client, HTTP, method="GET", endpoint="unmatched", status="404") == 2
    text = client.get("/metrics").text
    assert "not-served" not in text and "/no/such" not in text


def test_chat_tokens_and_time_to_first_token():
    client = make_client(FakeChatEngine(MODEL, reply="one two three four"))
    usage = client.post("/v1/chat/completions", json=CHAT).json()["usage"]
    assert usage["completion_tokens"] > 0
    assert sample(client, "labs_chat_completion_tokens_total", model=MODEL) == \
        usage["completion_tokens"]
    assert sample(client, "labs_chat_prompt_tokens_total", model=MODEL) == \
        usage["prompt_tokens"]
    assert sample(client, "labs_chat_time_to_first_token_seconds_count", model=MODEL) == 1
    # Streaming counts too.
    with client.stream("POST", "/v1/chat/completions", json=dict(CHAT, stream=True)) as stream:
        assert "[DONE]" in "".join(stream.iter_text())
    assert sample(client, "labs_chat_completion_tokens_total", model=MODEL) == \
        2 * usage["completion_tokens"]
    assert sample(client, "labs_chat_time_to_first_token_seconds_count", model=MODEL) == 2
    assert sample(client, HTTP, method="POST", endpoint="/v1/chat/completions",
                  status="200") == 2


def test_time_to_first_token_measures_the_wait():
    client = make_client(FakeChatEngine(MODEL, delay=0.2))
    client.post("/v1/chat/completions", json=CHAT)
    total = sample(client, "labs_chat_time_to_first_token_seconds_sum", model=MODEL)
    assert total is not None and total >= 0.2


def test_queue_depth_and_active_slots_are_read_at_scrape_time():
    engine = FakeChatEngine(MODEL)
    counts = {"active": 3, "waiting": 5}
    engine.queue_stats = lambda: (counts["active"], counts["waiting"])
    client = make_client(engine)
    assert sample(client, "labs_chat_slots_active", model=MODEL) == 3
    assert sample(client, "labs_chat_requests_waiting", model=MODEL) == 5
    counts.update(active=1, waiting=0)
    assert sample(client, "labs_chat_slots_active", model=MODEL) == 1
    assert sample(client, "labs_chat_requests_waiting", model=MODEL) == 0


def test_engines_without_a_scheduler_export_no_queue_series():
    assert sample(make_client(), "labs_chat_slots_active") is None


def test_model_readiness_and_load_time():
    client = make_client()
    assert sample(client, "labs_model_ready", model=MODEL, kind="chat") == 1
    slot = client.app.state.registry.slots[0]
    slot.load_seconds = 4.5
    assert sample(client, "labs_model_load_seconds", model=MODEL, kind="chat") == 4.5


def test_refusals_before_routing_are_counted_under_their_endpoint():
    client = make_client(api_key="k")
    client.post("/v1/chat/completions", json=CHAT)
    assert sample(client, HTTP, method="POST", endpoint="/v1/chat/completions",
                  status="401") == 1


def test_metrics_can_be_turned_off():
    client = make_client(metrics=False)
    assert client.get("/metrics").status_code == 404
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_two_apps_in_one_process_keep_separate_counts():
    first, second = make_client(), make_client()
    first.get("/v1/models")
    assert sample(first, HTTP, method="GET", endpoint="/v1/models", status="200") == 1
    assert sample(second, HTTP, method="GET", endpoint="/v1/models", status="200") is None


# --- request ids and the access log ----------------------------------------------------------


def access_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "labs_api.access"]


def test_every_response_has_a_request_id():
    client = make_client(api_key="k")
    for response in (client.get("/health"), client.get("/v1/models"),
                     client.get("/v1/models", headers={"Authorization": "Bearer k"})):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    first = client.get("/health").headers["x-request-id"]
    assert client.get("/health").headers["x-request-id"] != first


def test_a_sane_incoming_request_id_is_kept():
    response = make_client().get("/health", headers={"X-Request-ID": "trace-42.abc:1"})
    assert response.headers["x-request-id"] == "trace-42.abc:1"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "quote\"", "new\tline", ""])
def test_an_odd_incoming_request_id_is_replaced(bad):
    response = make_client().get("/health", headers={"X-Request-ID": bad})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_one_structured_access_line_per_request(caplog):
    client = make_client()
    caplog.set_level(logging.INFO, logger="labs_api.access")
    response = client.post("/v1/chat/completions", json=CHAT,
                           headers={"X-Request-ID": "req-1"})
    client.get("/v1/models/missing")
    lines = access_lines(caplog)
    assert len(lines) == 2
    fields = dict(part.split("=", 1) for part in lines[0].split(" "))
    usage = response.json()["usage"]
    assert fields["method"] == "POST" and fields["path"] == "/v1/chat/completions"
    assert fields["status"] == "200" and fields["request_id"] == "req-1"
    assert float(fields["duration_ms"]) >= 0
    assert int(fields["completion_tokens"]) == usage["completion_tokens"]
    assert "status=404" in lines[1] and "completion_tokens" not in lines[1]
    record = next(r for r in caplog.records if r.name == "labs_api.access")
    assert record.access["status"] == 200  # the same fields, for a JSON formatter


def test_streamed_completions_log_their_tokens(caplog):
    client = make_client()
    caplog.set_level(logging.INFO, logger="labs_api.access")
    body = dict(CHAT, stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body) as stream:
        text = "".join(stream.iter_text())
    assert '"usage"' in text
    (line,) = access_lines(caplog)
    assert re.search(r"completion_tokens=[1-9]", line)


def test_a_hostile_path_cannot_forge_a_log_line(caplog):
    client = make_client()
    caplog.set_level(logging.INFO, logger="labs_api.access")
    client.get("/v1/x%0Astatus=200%20forged=1")
    (line,) = access_lines(caplog)
    assert "\n" not in line
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', "<quoted>", line)
    assert "forged" not in unquoted and unquoted.count("status=") == 1
    assert "path=<quoted> status=404" in unquoted


def test_the_cli_turns_off_uvicorn_access_log(monkeypatch):
    import uvicorn

    from labs_api import app as app_module
    from labs_api import cli

    seen = {}
    monkeypatch.setattr(app_module, "create_app", lambda settings: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    cli.main([])
    assert seen["access_log"] is False
