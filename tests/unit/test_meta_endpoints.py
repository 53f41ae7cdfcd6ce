"""/health, /v1/models, /ready, /docs and /openapi.json."""

from __future__ import annotations

from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with
from tests.openai_schema import assert_matches_openai


def make_client(**states) -> TestClient:
    registry = registry_with(FakeChatEngine("a"), FakeChatEngine("b/c"), states=states)
    return TestClient(create_app(Settings(), registry))


def test_health_is_ok():
    response = make_client().get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_models_lists_every_served_model_in_openai_shape():
    body = make_client().get("/v1/models").json()
    assert_matches_openai(body, "ListModelsResponse")
    assert [m["id"] for m in body["data"]] == ["a", "b/c"]
    assert all(m["owned_by"] == "labs" and m["object"] == "model" for m in body["data"])


def test_retrieve_one_model_including_ids_with_slashes():
    client = make_client()
    body = client.get("/v1/models/b/c").json()
    assert_matches_openai(body, "Model")
    assert body["id"] == "b/c"
    missing = client.get("/v1/models/zzz")
    assert missing.status_code == 404 and "zzz" in missing.json()["error"]["message"]


def test_ready_reports_each_model():
    ready = make_client().get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert [(m["id"], m["state"]) for m in ready.json()["models"]] == [("a", "ready"),
                                                                       ("b/c", "ready")]


def test_docs_and_openapi_are_served():
    client = make_client()
    schema = client.get("/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/models", "/health"} <= set(schema["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
