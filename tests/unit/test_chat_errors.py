"""Bad requests on purpose: each gets the spec's status code and a body that explains it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with
from tests.openai_schema import assert_matches_openai

MODEL = "fake-chat"
GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}]}


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings(), registry_with(FakeChatEngine(MODEL))),
                      raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"frequency_penalty": 2.1}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": ""}]}, None),
        ({"stream": "yes please"}, "stream"),
        ({"n": 9}, "n"),
        ({"n": 0}, "n"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, None),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"abc": 1}}, None),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"store": True}, "store"),
        ({"model": ""}, "model"),
    ],
)
def test_invalid_values_get_422_with_the_spec_detail_and_an_openai_error(client, change, field):
    response = client.post("/v1/chat/completions", json={**GOOD, **change})
    assert response.status_code == 422, response.text
    body = response.json()
    assert isinstance(body["detail"], list) and body["detail"]
    assert {"type", "loc", "msg"} <= set(body["detail"][0])
    assert body["error"]["type"] == "invalid_request_error"
    if field is not None:
        assert field in body["error"]["message"]
        assert body["detail"][0]["loc"][1] == field


@pytest.mark.parametrize("missing", ["model", "messages"])
def test_missing_required_field_is_422_naming_it(client, missing):
    body = {k: v for k, v in GOOD.items() if k != missing}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["type"] == "missing" and detail["loc"] == ["body", missing]
    assert detail["msg"] == "Field required"


def test_malformed_json_is_400(client):
    response = client.post("/v1/chat/completions", content=b'{"model": "x", "messages": [',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert_matches_openai(body, "ErrorResponse")
    assert "Malformed JSON" in body["error"]["message"]


def test_unknown_model_is_404_naming_it_and_the_served_ids(client):
    response = client.post("/v1/chat/completions", json={**GOOD, "model": "gpt-9"})
    assert response.status_code == 404
    body = response.json()
    assert_matches_openai(body, "ErrorResponse")
    assert "gpt-9" in body["error"]["message"] and MODEL in body["error"]["message"]
    assert body["error"]["code"] == "model_not_found"


def test_model_still_loading_is_503_with_retry_after():
    registry = registry_with(FakeChatEngine(MODEL), states={MODEL: "loading"})
    client = TestClient(create_app(Settings(), registry))
    response = client.post("/v1/chat/completions", json=GOOD)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert "loading" in response.json()["error"]["message"]
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "loading"


def test_a_model_that_failed_to_load_is_500_with_a_message_and_no_traceback():
    def broken():
        raise OSError("weights file is truncated")

    registry = ModelRegistry([ModelSlot(MODEL, "chat", broken)])
    client = TestClient(create_app(Settings(), registry))
    response = client.post("/v1/chat/completions", json=GOOD)
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "failed to load" in message and "truncated" in message
    assert "Traceback" not in response.text
    # The server is still up and says what is wrong.
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "failed" and "truncated" in ready["models"][0]["error"]


def test_prompt_longer_than_context_is_400_that_says_so(client):
    long = " ".join(["word"] * 100)
    for stream in (False, True):
        response = client.post("/v1/chat/completions", json={
            **GOOD, "messages": [{"role": "user", "content": long}], "stream": stream})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and "context" in error["message"]


def test_logit_bias_outside_the_vocabulary_is_400(client):
    response = client.post("/v1/chat/completions", json={**GOOD, "logit_bias": {"5000": 3}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "logit_bias" and "5000" in error["message"]


def test_unknown_path_is_404_in_openai_shape(client):
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert_matches_openai(response.json(), "ErrorResponse")
