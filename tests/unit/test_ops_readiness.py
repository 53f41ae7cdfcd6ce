"""Liveness and readiness while a model loads slowly; load progress in the log and metrics."""

from __future__ import annotations

import logging
import threading
import time

from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine

MODEL = "slow-chat"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def slow_registry(release: threading.Event, hold_s: float = 0.0) -> ModelRegistry:
    def load() -> FakeChatEngine:
        assert release.wait(timeout=30)
        time.sleep(hold_s)
        return FakeChatEngine(MODEL)

    return ModelRegistry([ModelSlot(model_id=MODEL, kind="chat", load=load)])


def test_ready_is_503_while_loading_and_200_after(caplog):
    caplog.set_level(logging.INFO, logger="labs_api.models")
    release = threading.Event()
    app = create_app(Settings(preload_on_start=True), slow_registry(release, hold_s=0.2))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/ready").json()["models"][0]["state"] == "loading")
        loading = client.get("/ready")
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading"
        assert loading.json()["models"][0]["load_seconds"] is None
        # Liveness is unaffected, and requests for the model get 503 with Retry-After.
        assert client.get("/health").json() == {"status": "ok"}
        busy = client.post("/v1/chat/completions", json=CHAT)
        assert busy.status_code == 503 and "retry-after" in busy.headers
        assert "loading chat model slow-chat (1/1)" in caplog.text

        release.set()
        wait_for(lambda: client.get("/ready").status_code == 200)
        ready = client.get("/ready").json()
        assert ready["status"] == "ready"
        assert ready["models"][0]["state"] == "ready"
        assert ready["models"][0]["load_seconds"] >= 0.2
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert "chat model slow-chat ready in" in caplog.text
        metrics = client.get("/metrics").text
        assert f'labs_model_ready{{kind="chat",model="{MODEL}"}} 1.0' in metrics
        assert f'labs_model_load_seconds{{kind="chat",model="{MODEL}"}}' in metrics


def test_model_not_ready_shows_zero_in_metrics():
    release = threading.Event()
    app = create_app(Settings(preload_on_start=True), slow_registry(release))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/ready").json()["models"][0]["state"] == "loading")
        metrics = client.get("/metrics").text
        assert f'labs_model_ready{{kind="chat",model="{MODEL}"}} 0.0' in metrics
        assert "labs_model_load_seconds{" not in metrics
        release.set()


def test_a_failed_load_makes_ready_503_failed():
    def broken() -> None:
        raise RuntimeError("weights missing")

    registry = ModelRegistry([ModelSlot(model_id=MODEL, kind="chat", load=broken)])
    with TestClient(create_app(Settings(preload_on_start=True), registry)) as client:
        wait_for(lambda: client.get("/ready").json()["status"] != "loading")
        failed = client.get("/ready")
        assert failed.status_code == 503 and failed.json()["status"] == "failed"
        assert "weights missing" in failed.json()["models"][0]["error"]
        assert client.get("/health").status_code == 200


def test_ready_stays_open_when_keys_are_set():
    release = threading.Event()
    release.set()
    app = create_app(Settings(preload_on_start=True, api_key="k"), slow_registry(release))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/ready").status_code == 200)
        assert client.get("/v1/models").status_code == 401
