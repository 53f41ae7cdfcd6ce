"""LABS_TTS_MODEL and LABS_TTS_THREADS: which engine serves speech, and bad values."""

from __future__ import annotations

import pytest

from labs_api.engines.speech.factory import (
    DEFAULT_TTS_MODEL,
    engine_name,
    load_speech_engine,
    speech_slot,
)
from labs_api.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("LABS_TTS_MODEL", "LABS_TTS_THREADS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_bundled_piper_voice_on_one_thread():
    settings = Settings()
    assert settings.tts_model == DEFAULT_TTS_MODEL == "en_US-joe-medium"
    assert settings.tts_threads == 1


def test_variables_are_read(monkeypatch):
    monkeypatch.setenv("LABS_TTS_MODEL", "suno/bark-small")
    monkeypatch.setenv("LABS_TTS_THREADS", "2")
    settings = load_settings()
    assert (settings.tts_model, settings.tts_threads) == ("suno/bark-small", 2)


@pytest.mark.parametrize(("name", "value"),
                         [("LABS_TTS_THREADS", "0"), ("LABS_TTS_THREADS", "two"),
                          ("LABS_TTS_MODEL", "")])
def test_a_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings()
    assert name in str(stopped.value) and repr(value) in str(stopped.value)


@pytest.mark.parametrize(
    ("source", "engine"),
    [("en_US-joe-medium", "piper"), ("/voices/en_GB-alan-medium.onnx", "piper"),
     ("VOICE.ONNX", "piper"), ("suno/bark", "bark"), ("suno/bark-small", "bark"),
     ("/models/my-bark", "bark")],
)
def test_the_source_picks_the_engine(source, engine):
    assert engine_name(source) == engine
    slot = speech_slot(Settings(tts_model=source))
    assert (slot.model_id, slot.kind, slot.description) == (source, "speech",
                                                            f"speech via {engine}")
    assert slot.state == "waiting"  # nothing is loaded until the registry asks


def test_a_missing_piper_file_fails_with_its_path(tmp_path):
    missing = tmp_path / "nobody.onnx"
    with pytest.raises(FileNotFoundError, match="nobody.onnx"):
        load_speech_engine(str(missing), Settings(tts_model=str(missing)))
