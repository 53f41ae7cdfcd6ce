"""The speech-to-text endpoints' HTTP layer on a fake engine: the form, every response format,
streaming, audio formats, limits, and every error case."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from labs_api.api.transcription.protocol import MAX_FILE_BYTES, MAX_PROMPT_CHARS
from labs_api.app import create_app
from labs_api.audio_decode import SAMPLE_RATE
from labs_api.engines.transcription.base import TranscriptionOptions, VadSettings
from labs_api.settings import Settings
from tests.audio_files import FORMATS, audio_file
from tests.fake_transcription import FakeTranscriptionEngine, tone, transcription_registry
from tests.openai_schema import assert_matches_openai
from tests.unit.test_speech_http import serve_in_thread

URL = "/v1/audio/transcriptions"
#: loud, silent, loud: the fake engine makes two segments of it
THREE_SECONDS = np.concatenate([tone(1), tone(1, loud=False), tone(1)])
TWO_SEGMENTS = "alpha bravo. charlie delta."


def client_for(engine: FakeTranscriptionEngine | None = None, **settings) -> TestClient:
    engine = engine or FakeTranscriptionEngine()
    app = create_app(Settings(preload_on_start=False, **settings),
                     transcription_registry(engine))
    return TestClient(app)


def wav(samples: np.ndarray = THREE_SECONDS) -> tuple[str, bytes, str]:
    return ("speech.wav", audio_file(samples, SAMPLE_RATE, "wav")[1], "audio/wav")


def post(client: TestClient, data: dict | None = None, files: dict | None = None,
         url: str = URL) -> httpx.Response:
    data = {"model": "whisper-1", **(data or {})}
    return client.post(url, data=data, files={"file": wav()} if files is None else files)


@pytest.fixture()
def engine() -> FakeTranscriptionEngine:
    return FakeTranscriptionEngine()


@pytest.fixture()
def client(engine) -> TestClient:
    with client_for(engine) as client:
        yield client


# --- response formats ---------------------------------------------------------------------


def test_json_is_the_default_and_matches_openai(client):
    response = post(client)
    assert response.status_code == 200
    body = response.json()
    assert body == {"text": TWO_SEGMENTS, "usage": {"type": "duration", "seconds": 3}}
    assert_matches_openai(body, "CreateTranscriptionResponseJson")


def test_text_srt_and_vtt_bodies(client):
    text = post(client, {"response_format": "text"})
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == TWO_SEGMENTS + "\n"
    srt = post(client, {"response_format": "srt"})
    assert srt.text == ("1\n00:00:00,000 --> 00:00:00,900\nalpha bravo.\n\n"
                        "2\n00:00:02,000 --> 00:00:02,900\ncharlie delta.\n")
    vtt = post(client, {"response_format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text == ("WEBVTT\n\n00:00:00.000 --> 00:00:00.900\nalpha bravo.\n\n"
                        "00:00:02.000 --> 00:00:02.900\ncharlie delta.\n")


def test_verbose_json_has_language_duration_and_segments(client):
    body = post(client, {"response_format": "verbose_json"}).json()
    assert_matches_openai(body, "CreateTranscriptionResponseVerboseJson")
    assert body["task"] == "transcribe"
    assert body["language"] == "english" and body["duration"] == 3.0
    assert [s["start"] for s in body["segments"]] == [0.0, 2.0]
    assert [s["id"] for s in body["segments"]] == [0, 1]
    assert "".join(s["text"] for s in body["segments"]).strip() == body["text"] == TWO_SEGMENTS
    assert "words" not in body
    for segment in body["segments"]:
        assert_matches_openai(segment, "TranscriptionSegment")


def test_word_timestamps_with_verbose_json(client, engine):
    body = post(client, {"response_format": "verbose_json",
                         "timestamp_granularities[]": ["word", "segment"]}).json()
    assert_matches_openai(body, "CreateTranscriptionResponseVerboseJson")
    assert engine.calls[-1].word_timestamps is True
    assert [w["word"] for w in body["words"]] == ["alpha", "bravo.", "charlie", "delta."]
    assert body["words"][2] == {"word": "charlie", "start": 2.0, "end": 2.4}
    assert len(body["segments"]) == 2
    only_words = post(client, {"response_format": "verbose_json",
                               "timestamp_granularities[]": "word"}).json()
    assert "segments" not in only_words and len(only_words["words"]) == 4
    assert engine.calls[-2].word_timestamps is True
    post(client, {"response_format": "verbose_json"})
    assert engine.calls[-1].word_timestamps is False  # words cost time: only when asked


def test_silence_is_an_empty_transcript_not_an_error(client):
    body = post(client, files={"file": wav(tone(2, loud=False))}).json()
    assert body["text"] == ""
    verbose = post(client, {"response_format": "verbose_json"},
                   files={"file": wav(tone(2, loud=False))}).json()
    assert verbose["segments"] == [] and verbose["duration"] == 2.0


# --- streaming ----------------------------------------------------------------------------


def sse_events(text: str) -> list[dict]:
    lines = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_stream_sends_deltas_then_done(client, fmt):
    response = post(client, {"stream": "true", "response_format": fmt})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert [e["delta"] for e in events[:2]] == ["alpha bravo.", " charlie delta."]
    assert events[-1]["text"] == TWO_SEGMENTS == "".join(e["delta"] for e in events[:2])
    for event in events[:2]:
        assert_matches_openai(event, "TranscriptTextDeltaEvent")
        assert_matches_openai(event, "CreateTranscriptionResponseStreamEvent")
    assert_matches_openai(events[-1], "TranscriptTextDoneEvent")


def test_stream_false_is_a_plain_body(client):
    assert post(client, {"stream": "false"}).json()["text"] == TWO_SEGMENTS


def test_deltas_arrive_as_segments_are_decoded():
    engine = FakeTranscriptionEngine(delay=0.3)
    app = create_app(Settings(preload_on_start=False), transcription_registry(engine))
    samples = np.concatenate([tone(1), tone(1, loud=False)] * 4)
    with serve_in_thread(app) as url:
        started = time.perf_counter()
        arrivals = []
        with httpx.stream("POST", f"{url}{URL}", data={"model": "whisper-1", "stream": "true"},
                          files={"file": wav(samples)}, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.perf_counter() - started)
    assert len(arrivals) == 5  # four deltas and the done event
    assert arrivals[0] < 0.3 * 3  # the first segment, not the whole file
    assert arrivals[-1] - arrivals[0] >= 0.3 * 2.5


def test_a_client_that_disconnects_stops_the_transcription():
    engine = FakeTranscriptionEngine(delay=0.2)
    app = create_app(Settings(preload_on_start=False), transcription_registry(engine))
    samples = np.concatenate([tone(1), tone(1, loud=False)] * 30)  # 30 segments, 6 s of work
    with serve_in_thread(app) as url:
        with httpx.stream("POST", f"{url}{URL}", data={"model": "whisper-1", "stream": "true"},
                          files={"file": wav(samples)}, timeout=30) as response:
            next(response.iter_lines())
        time.sleep(0.6)
        steps = engine.steps
        time.sleep(0.6)
        assert engine.steps == steps  # stopped, not carrying on to the end
        assert steps < 8
        with pytest.raises(httpx.ReadTimeout):  # not streaming: the same
            httpx.post(f"{url}{URL}", data={"model": "whisper-1"},
                       files={"file": wav(samples)}, timeout=0.5)
        time.sleep(0.6)
        steps = engine.steps
        time.sleep(0.6)
        assert engine.steps == steps and engine._active == 0


# --- audio formats and limits ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", *FORMATS])
def test_every_common_audio_format_is_decoded(client, fmt):
    name, data = audio_file(THREE_SECONDS, SAMPLE_RATE, fmt)
    response = post(client, {"response_format": "verbose_json"}, files={"file": (name, data)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == TWO_SEGMENTS  # loud, silent, loud survived the codec
    assert body["duration"] == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("data", [b"this is not audio", b"RIFF" + bytes(40), bytes(2000),
                                  b"ffconcat version 1.0\nfile /etc/hostname\n",
                                  b"#EXTM3U\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n"])
def test_data_that_is_not_audio_is_a_400_naming_file(client, data):
    response = post(client, files={"file": ("x.wav", data, "audio/wav")})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "file" and error["code"] == "invalid_audio"
    assert "could not be read" in error["message"] or "no audio" in error["message"]


def test_an_empty_file_is_a_400(client):
    error = post(client, files={"file": ("x.wav", b"", "audio/wav")}).json()["error"]
    assert error["param"] == "file" and "empty" in error["message"]


def test_audio_past_the_duration_limit_is_a_400():
    engine = FakeTranscriptionEngine()
    with client_for(engine, stt_max_audio_seconds=2.5) as client:
        response = post(client)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "audio_too_long"
        assert "2.5 seconds" in response.json()["error"]["message"]
        assert engine.calls == []
        assert post(client, files={"file": wav(tone(2))}).status_code == 200


def test_uploads_above_the_general_body_limit_are_accepted_up_to_25_mib(client):
    big = wav(tone(400))  # 12.8 MB of WAV: over the 10 MiB body limit of other routes
    assert len(big[1]) > Settings().max_body_bytes
    response = post(client, files={"file": big})
    assert response.status_code == 200 and response.json()["usage"]["seconds"] == 400
    assert client.post("/v1/embeddings", content=b"x" * len(big[1])).status_code == 413


def test_a_file_over_25_mib_is_a_413(client):
    data = b"\0" * (MAX_FILE_BYTES + 1)
    response = post(client, files={"file": ("big.wav", data, "audio/wav")})
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "file"
    huge = post(client, files={"file": ("big.wav", data + bytes(2 << 20), "audio/wav")})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"


# --- the form's fields ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                                   "fake-whisper"])
def test_openai_model_names_mean_the_served_model(client, model):
    assert post(client, {"model": model}).json()["text"] == TWO_SEGMENTS


def test_an_unknown_model_is_a_404_listing_the_served_one(client):
    response = post(client, {"model": "whisper-large"})
    assert response.status_code == 404
    assert "fake-whisper" in response.json()["error"]["message"]


def test_prompt_temperature_and_language_reach_the_engine(client, engine):
    assert post(client, {"prompt": "Alpha, Bravo.", "temperature": "0.4",
                         "language": "EN"}).status_code == 200
    options = engine.calls[-1]
    assert (options.prompt, options.temperature, options.language) == ("Alpha, Bravo.", 0.4, "en")
    post(client)
    assert engine.calls[-1] == TranscriptionOptions()  # the defaults: detected language, t=0


def test_chunking_strategy_tunes_voice_activity_detection(client, engine):
    assert post(client, {"chunking_strategy": "auto"}).status_code == 200
    assert engine.calls[-1].vad == VadSettings()
    assert post(client, {"chunking_strategy[type]": "server_vad",
                         "chunking_strategy[threshold]": "0.7",
                         "chunking_strategy[silence_duration_ms]": "800",
                         "chunking_strategy[prefix_padding_ms]": "100"}).status_code == 200
    assert engine.calls[-1].vad == VadSettings(threshold=0.7, min_silence_ms=800,
                                               speech_pad_ms=100)
    as_json = json.dumps({"type": "server_vad", "threshold": 0.2})
    assert post(client, {"chunking_strategy": as_json}).status_code == 200
    assert engine.calls[-1].vad.threshold == 0.2


def test_a_language_the_model_does_not_know_is_a_400(client, engine):
    response = post(client, {"language": "fr"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "language" and "'fr'" in error["message"]
    assert "en" in error["message"]


def assert_422(response: httpx.Response, field: str, words: str = "") -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    param = body["error"]["param"]
    assert param == field or param.startswith(f"{field}."), param  # (.0: the first item)
    assert body["detail"][0]["loc"][:2] == ["body", field]
    assert words.lower() in body["error"]["message"].lower()


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"include[]": "logprobs"}, "include", "not supported"),
    ({"languages[]": ["en", "fr"]}, "languages", "not supported"),
    ({"keywords[]": "Labs"}, "keywords", "not supported"),
    ({"known_speaker_names[]": "agent"}, "known_speaker_names", "diarization"),
    ({"known_speaker_references[]": "data:audio/wav;base64,AAAA"},
     "known_speaker_references", "diarization"),
    ({"response_format": "diarized_json"}, "response_format", "diarization"),
    ({"response_format": "mp3"}, "response_format", ""),
    ({"temperature": "1.5"}, "temperature", "less than or equal to 1"),
    ({"temperature": "warm"}, "temperature", ""),
    ({"timestamp_granularities[]": "word"}, "timestamp_granularities", "verbose_json"),
    ({"timestamp_granularities[]": "sentence", "response_format": "verbose_json"},
     "timestamp_granularities", ""),
    ({"stream": "true", "response_format": "srt"}, "stream", "cannot be streamed"),
    ({"stream": "maybe"}, "stream", ""),
    ({"chunking_strategy": "manual"}, "chunking_strategy", ""),
    ({"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "2"},
     "chunking_strategy", ""),
    ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", "at most"),
    ({"user": "someone"}, "user", "extra"),
    ({"model": ""}, "model", ""),
])
def test_fields_we_cannot_honour_are_a_422_naming_them(client, engine, data, field, words):
    assert_422(post(client, data), field, words)
    assert engine.calls == []


def test_a_missing_file_or_model_is_a_422(client):
    assert_422(client.post(URL, data={"model": "whisper-1"}), "file", "required")
    assert_422(client.post(URL, files={"file": wav()}), "model", "required")


def test_text_where_the_file_belongs_is_a_422(client):
    assert_422(client.post(URL, data={"model": "whisper-1", "file": "speech.wav"}), "file",
               "uploaded file")


def test_two_files_or_a_repeated_field_are_a_422(client):
    files = [("file", wav()), ("file", wav())]
    assert_422(client.post(URL, data={"model": "whisper-1"}, files=files), "file", "one file")
    repeated = client.post(URL, data={"model": "whisper-1", "language": ["en", "fr"]},
                           files={"file": wav()})
    assert_422(repeated, "language", "more than once")


def test_a_json_body_is_a_422_asking_for_the_file(client):
    response = client.post(URL, json={"model": "whisper-1", "file": "x"})
    assert response.status_code == 422
    assert "file" in {e["loc"][-1] for e in response.json()["detail"]}


# --- translations -------------------------------------------------------------------------


def test_translation_with_an_english_only_model_is_a_400_that_says_so(client, engine):
    response = post(client, url="/v1/audio/translations")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model" and "English-only" in error["message"]
    assert engine.calls == []


def test_translation_on_a_multilingual_model():
    engine = FakeTranscriptionEngine(multilingual=True)
    with client_for(engine) as client:
        body = post(client, url="/v1/audio/translations").json()
        assert body["text"] == TWO_SEGMENTS
        assert_matches_openai(body, "CreateTranslationResponseJson")
        assert engine.calls[-1].task == "translate"
        verbose = post(client, {"response_format": "verbose_json"},
                       url="/v1/audio/translations").json()
        assert_matches_openai(verbose, "CreateTranslationResponseVerboseJson")
        assert verbose["task"] == "translate" and verbose["language"] == "english"
        detected = post(client, {"response_format": "verbose_json"}).json()
        assert detected["language"] == "french"  # transcription keeps the spoken language
        assert post(client, {"language": "de"}).status_code == 200
        assert engine.calls[-1].language == "de"
        # the translation form has no language, stream or timestamps (OpenAI's neither)
        assert_422(post(client, {"language": "fr"}, url="/v1/audio/translations"), "language")
        assert_422(post(client, {"stream": "true"}, url="/v1/audio/translations"), "stream")


# --- admission, registry ------------------------------------------------------------------


def test_past_the_queue_a_request_gets_503_with_retry_after():
    gate = threading.Event()
    engine = FakeTranscriptionEngine(max_queue=1, gate=gate)
    app = create_app(Settings(preload_on_start=False), transcription_registry(engine))

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     timeout=30) as client:
            def send():
                return client.post(URL, data={"model": "whisper-1"}, files={"file": wav()})
            held = [asyncio.create_task(send()) for _ in range(2)]
            while engine._active < 2:  # one running, one waiting
                await asyncio.sleep(0.01)
            refused = await send()
            gate.set()
            return [refused, *await asyncio.gather(*held)]

    refused, *served = asyncio.run(scenario())
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert refused.json()["error"]["code"] == "server_overloaded"
    assert [r.json()["text"] for r in served] == [TWO_SEGMENTS] * 2


def test_the_model_is_listed_and_ready(client):
    models = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["fake-whisper"]
    assert client.get("/v1/models/fake-whisper").json()["id"] == "fake-whisper"
    ready = client.get("/ready")
    assert ready.status_code == 200 and "fake-whisper" in ready.text


def test_openapi_documents_the_multipart_form(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"][URL]["post"]["requestBody"]["content"]["multipart/form-data"]
    properties = body["schema"]["properties"]
    assert properties["file"]["format"] == "binary"
    assert {"model", "language", "prompt", "response_format", "temperature",
            "timestamp_granularities", "stream"} <= set(properties)
    assert "/v1/audio/translations" in spec["paths"]
