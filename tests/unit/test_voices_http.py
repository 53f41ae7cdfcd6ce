"""GET /v1/audio/voices on scripted speech engines."""

from __future__ import annotations

from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.settings import Settings
from tests.unit.test_speech_http import FakeSpeechEngine, speech_registry


def test_each_served_voice_with_language_sample_rate_and_openai_names():
    engine = FakeSpeechEngine(voices=("fake-a", "fake-b"), sample_rate=16_000)
    engine.voice_languages = {"fake-a": "en_US"}
    client = TestClient(create_app(Settings(), speech_registry(engine)))
    response = client.get("/v1/audio/voices")
    assert response.status_code == 200
    body = response.json()
    assert body["voices"] == ["fake-a", "fake-b"]
    first, second = body["data"]
    assert first == {"id": "fake-a", "object": "voice", "name": "fake-a", "model": "fake-voice",
                     "language": "en_US", "sample_rate": 16_000,
                     "openai_voices": ["alloy", "ballad", "echo", "onyx", "sage", "verse",
                                       "cedar"]}
    assert second["language"] is None
    assert second["openai_voices"] == ["ash", "coral", "fable", "nova", "shimmer", "marin"]


def test_voices_of_several_models_and_one_model_by_name():
    one = FakeSpeechEngine("voice-one", voices=("x",), sample_rate=22_050)
    two = FakeSpeechEngine("voice-two", voices=("y", "z"), sample_rate=24_000)
    client = TestClient(create_app(Settings(), speech_registry(one, two)),
                        raise_server_exceptions=False)
    body = client.get("/v1/audio/voices").json()
    assert [(v["model"], v["id"], v["sample_rate"]) for v in body["data"]] == [
        ("voice-one", "x", 22_050), ("voice-two", "y", 24_000), ("voice-two", "z", 24_000)]
    only = client.get("/v1/audio/voices", params={"model": "voice-two"}).json()
    assert only["voices"] == ["y", "z"]
    assert client.get("/v1/audio/voices", params={"model": "tts-1"}).json()["voices"] == ["x"]
    missing = client.get("/v1/audio/voices", params={"model": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"


def test_a_loading_speech_model_is_503():
    engine = FakeSpeechEngine()
    client = TestClient(create_app(Settings(), speech_registry(engine, state="loading")),
                        raise_server_exceptions=False)
    response = client.get("/v1/audio/voices")
    assert response.status_code == 503 and "retry-after" in response.headers
