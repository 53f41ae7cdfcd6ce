"""The speech endpoints' HTTP layer on a fake engine: formats, voices, errors, streaming."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
import wave
from collections.abc import Iterator

import av
import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from labs_api.api.speech.protocol import MAX_INPUT_CHARS, OPENAI_VOICES
from labs_api.app import create_app
from labs_api.engines.speech.base import SpeechEngine
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings
from tests.openai_schema import assert_matches_openai

SECONDS_PER_CHAR = 0.02


class FakeSpeechEngine(SpeechEngine):
    """A 440 Hz tone, 20 ms per character of each sentence; records what it was asked to say."""

    def __init__(self, model_id: str = "fake-voice", sample_rate: int = 16_000,
                 voices: tuple[str, ...] = ("fake-a", "fake-b"), delay: float = 0.0,
                 fail: bool = False) -> None:
        super().__init__()
        self.model_id = model_id
        self.sample_rate = sample_rate
        self.voices = voices
        self.delay = delay
        self.fail = fail
        self.spoken: list[tuple[str, str]] = []

    def synthesize(self, text: str, voice: str) -> np.ndarray:
        if self.fail:
            raise RuntimeError("the fake voice broke")
        if self.delay:
            time.sleep(self.delay)
        self.spoken.append((text, voice))
        n = int(len(text) * SECONDS_PER_CHAR * self.sample_rate)
        return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / self.sample_rate)).astype(np.float32)


def expected_seconds(engine: SpeechEngine, text: str) -> float:
    return sum(len(s) for s in engine.sentences(text)) * SECONDS_PER_CHAR


def speech_registry(*engines: SpeechEngine, state: str = "ready") -> ModelRegistry:
    slots = []
    for engine in engines:
        slot = ModelSlot(model_id=engine.model_id, kind="speech", load=lambda e=engine: e)
        slot.state = state  # type: ignore[assignment]
        slot.engine = engine
        slots.append(slot)
    return ModelRegistry(slots)


@pytest.fixture
def engine() -> FakeSpeechEngine:
    return FakeSpeechEngine()


@pytest.fixture
def client(engine) -> TestClient:
    return TestClient(create_app(Settings(preload_on_start=False), speech_registry(engine)),
                      raise_server_exceptions=False)


def speech(client: TestClient, **body) -> httpx.Response:
    return client.post("/v1/audio/speech",
                       json={"model": "tts-1", "voice": "alloy", "input": "Hello there.", **body})


def read_wav(data: bytes) -> tuple[int, np.ndarray]:
    """Rate and samples of a WAV, read with Python's wave module (to the end of the bytes)."""
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnchannels() == 1 and reader.getsampwidth() == 2
        frames = reader.readframes(2**31 - 1)
        return reader.getframerate(), np.frombuffer(frames, dtype="<i2")


def decode(data: bytes) -> tuple[str, str, int, float]:
    """Container, codec, sample rate and duration of compressed audio, decoded by FFmpeg."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.codec_context.sample_rate
        return container.format.name, stream.codec_context.name, rate, samples / rate


# --- POST /v1/tts (the spec) ---------------------------------------------------------------


def test_tts_returns_a_complete_wav_of_the_text(client, engine):
    text = "Hello world. This is a second sentence."
    response = client.post("/v1/tts", json={"text": text})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert int(response.headers["content-length"]) == len(response.content)
    rate, samples = read_wav(response.content)
    with wave.open(io.BytesIO(response.content)) as reader:
        assert reader.getnframes() == samples.size  # exact sizes, not a streaming header
    assert rate == engine.sample_rate
    assert samples.size / rate == pytest.approx(expected_seconds(engine, text), abs=0.01)
    assert np.abs(samples).max() > 10_000
    assert [s for s, _ in engine.spoken] == ["Hello world.", "This is a second sentence."]
    assert {voice for _, voice in engine.spoken} == {"fake-a"}


def test_tts_takes_the_served_model_by_name_and_404s_others(client):
    assert client.post("/v1/tts", json={"text": "Hi.", "model": "fake-voice"}).status_code == 200
    response = client.post("/v1/tts", json={"text": "Hi.", "model": "suno/bark"})
    assert response.status_code == 404
    body = response.json()
    assert_matches_openai(body, "ErrorResponse")
    assert "suno/bark" in body["error"]["message"] and "fake-voice" in body["error"]["message"]
    assert body["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_tts_empty_text_is_422(client, text):
    response = client.post("/v1/tts", json={"text": text})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "text"]
    assert "text" in response.json()["error"]["message"]


def test_tts_text_over_the_limit_is_422_naming_the_limit(client, engine):
    response = client.post("/v1/tts", json={"text": "a" * (MAX_INPUT_CHARS + 1)})
    assert response.status_code == 422
    assert str(MAX_INPUT_CHARS) in response.json()["error"]["message"]
    assert engine.spoken == []
    assert client.post("/v1/tts", json={"text": "a " * (MAX_INPUT_CHARS // 2)}).status_code == 200


def test_tts_missing_text_and_unknown_fields_are_422(client):
    missing = client.post("/v1/tts", json={})
    assert missing.status_code == 422
    assert missing.json()["detail"][0] == {**missing.json()["detail"][0], "type": "missing",
                                           "loc": ["body", "text"], "msg": "Field required"}
    assert client.post("/v1/tts", json={"text": "Hi.", "voice": "x"}).status_code == 422


def test_tts_text_of_punctuation_only_gives_an_empty_wav(client):
    response = client.post("/v1/tts", json={"text": "... !!! ???"})
    assert response.status_code == 200
    rate, samples = read_wav(response.content)
    assert samples.size == 0


# --- POST /v1/audio/speech (OpenAI) ------------------------------------------------------


def test_speech_defaults_to_mp3_and_validates_against_openai_request_schema(client, engine):
    body = {"model": "tts-1", "voice": "alloy", "input": "Hello there, how are you today?"}
    assert_matches_openai(body, "CreateSpeechRequest")
    response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    container, codec, _, seconds = decode(response.content)
    assert (container, codec) == ("mp3", "mp3float")
    assert seconds == pytest.approx(expected_seconds(engine, body["input"]), abs=0.1)


@pytest.mark.parametrize(
    ("fmt", "media_type", "container", "codec"),
    [
        ("mp3", "audio/mpeg", "mp3", "mp3float"),
        ("opus", "audio/ogg", "ogg", "opus"),
        ("aac", "audio/aac", "aac", "aac"),
        ("flac", "audio/flac", "flac", "flac"),
    ],
)
def test_each_compressed_format_decodes_to_the_right_length(client, engine, fmt, media_type,
                                                          container, codec):
    text = "One sentence here. And another one follows it."
    response = speech(client, input=text, response_format=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    got_container, got_codec, rate, seconds = decode(response.content)
    assert (got_container, got_codec) == (container, codec)
    # encoders pad to whole frames and add a priming delay: up to ~0.15 s
    assert seconds == pytest.approx(expected_seconds(engine, text), abs=0.15)
    assert rate in (engine.sample_rate, 24_000, 48_000)


def test_wav_stream_has_an_open_ended_header_that_wave_reads(client, engine):
    text = "One sentence here. And another one follows it."
    response = speech(client, input=text, response_format="wav")
    assert response.headers["content-type"] == "audio/wav"
    rate, samples = read_wav(response.content)
    assert rate == engine.sample_rate
    assert samples.size / rate == pytest.approx(expected_seconds(engine, text), abs=0.01)
    assert response.content[4:8] == b"\xff\xff\xff\xff"


def test_pcm_is_raw_16_bit_at_24_khz(client, engine):
    text = "One sentence here. And another one follows it."
    response = speech(client, input=text, response_format="pcm")
    assert response.headers["content-type"] == "audio/pcm"
    samples = np.frombuffer(response.content, dtype="<i2")
    assert samples.size / 24_000 == pytest.approx(expected_seconds(engine, text), abs=0.01)
    # the 440 Hz tone keeps its pitch through the 16 -> 24 kHz resampling: zero crossings
    # over the first 0.3 s (inside the first sentence) are 2 x 440 x 0.3
    crossings = np.count_nonzero(np.diff(np.signbit(samples[:7200])))
    assert crossings == pytest.approx(264, abs=4)


@pytest.mark.parametrize("speed", [2.0, 0.5, 4.0, 0.25])
def test_speed_divides_the_duration(client, engine, speed):
    text = "A sentence long enough to measure its duration well."
    response = speech(client, input=text, response_format="wav", speed=speed)
    rate, samples = read_wav(response.content)
    assert samples.size / rate == pytest.approx(expected_seconds(engine, text) / speed, rel=0.05)


def test_every_openai_voice_maps_to_a_served_voice(client, engine):
    for name in OPENAI_VOICES:
        assert speech(client, voice=name).status_code == 200, name
    used = [voice for _, voice in engine.spoken]
    assert set(used) == {"fake-a", "fake-b"}  # spread over the engine's two voices
    assert used[0] == "fake-a" and used[1] == "fake-b"  # alloy -> first, ash -> second


def test_engine_voice_names_and_custom_voice_objects_are_accepted(client, engine):
    assert speech(client, voice="fake-b").status_code == 200
    assert speech(client, voice="FAKE-B").status_code == 200
    assert speech(client, voice={"id": "fake-b"}).status_code == 200
    assert speech(client, voice={"id": "Alloy"}).status_code == 200
    assert [voice for _, voice in engine.spoken] == ["fake-b", "fake-b", "fake-b", "fake-a"]


@pytest.mark.parametrize("voice", ["robot", {"id": "voice_1234"}, ""])
def test_unknown_voice_is_400_listing_the_accepted_ones(client, engine, voice):
    response = speech(client, voice=voice)
    assert response.status_code == 400
    body = response.json()
    assert_matches_openai(body, "ErrorResponse")
    assert body["error"]["param"] == "voice"
    assert "alloy" in body["error"]["message"] and "fake-a" in body["error"]["message"]
    assert engine.spoken == []


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "fake-voice"])
def test_openai_model_names_mean_the_served_model(client, model):
    assert speech(client, model=model).status_code == 200


def test_unknown_model_is_404_like_chat(client):
    response = speech(client, model="suno/bark")
    assert response.status_code == 404
    assert_matches_openai(response.json(), "ErrorResponse")
    assert "fake-voice" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input": ""}, "input"),
        ({"input": "  "}, "input"),
        ({"input": "a" * (MAX_INPUT_CHARS + 1)}, "input"),
        ({"response_format": "ogg"}, "response_format"),
        ({"response_format": "MP3"}, "response_format"),
        ({"speed": 0.2}, "speed"),
        ({"speed": 4.01}, "speed"),
        ({"speed": "fast"}, "speed"),
        ({"instructions": "Speak like a pirate."}, "instructions"),
        ({"stream_format": "sse"}, "stream_format"),
        ({"model": ""}, "model"),
        ({"temperature": 0.5}, "temperature"),
    ],
)
def test_invalid_values_are_422_naming_the_field(client, engine, change, field):
    response = speech(client, **change)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"][0]["loc"][1] == field
    assert field in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    assert engine.spoken == []


@pytest.mark.parametrize("missing", ["model", "input", "voice"])
def test_required_fields_as_openai(client, missing):
    body = {"model": "tts-1", "voice": "alloy", "input": "Hi."}
    del body[missing]
    response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", missing]


def test_empty_instructions_and_speed_limits_are_accepted(client):
    assert speech(client, instructions="").status_code == 200
    assert speech(client, speed=0.25, response_format="pcm").status_code == 200
    assert speech(client, speed=4.0, response_format="pcm").status_code == 200


def test_malformed_json_is_400(client):
    response = client.post("/v1/audio/speech", content=b'{"input": ',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400


def test_model_still_loading_is_503_with_retry_after():
    registry = speech_registry(FakeSpeechEngine(), state="loading")
    client = TestClient(create_app(Settings(preload_on_start=False), registry))
    for response in (speech(client), client.post("/v1/tts", json={"text": "Hi."})):
        assert response.status_code == 503
        assert "Retry-After" in response.headers


def test_a_failing_engine_is_a_500_with_a_message_not_a_broken_stream():
    client = TestClient(create_app(Settings(preload_on_start=False),
                                   speech_registry(FakeSpeechEngine(fail=True))),
                        raise_server_exceptions=False)
    for response in (speech(client), client.post("/v1/tts", json={"text": "Hi."})):
        assert response.status_code == 500
        body = response.json()
        assert_matches_openai(body, "ErrorResponse")
        assert "the fake voice broke" in body["error"]["message"]


def test_both_endpoints_are_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "audio/wav" in paths["/v1/tts"]["post"]["responses"]["200"]["content"]
    assert "audio/mpeg" in paths["/v1/audio/speech"]["post"]["responses"]["200"]["content"]


# --- streaming over a real HTTP connection ------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Run ``app`` under uvicorn on a thread; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def ten_sentences() -> str:
    return " ".join(f"This is sentence number {i}." for i in range(10))


@pytest.mark.parametrize("fmt", ["wav", "mp3", "pcm"])
def test_audio_streams_sentence_by_sentence(fmt):
    engine = FakeSpeechEngine(delay=0.25)
    app = create_app(Settings(preload_on_start=False), speech_registry(engine))
    with serve_in_thread(app) as url:
        started = time.perf_counter()
        body = {"model": "tts-1", "voice": "alloy", "input": ten_sentences(),
                "response_format": fmt}
        with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=30) as response:
            assert response.status_code == 200
            arrivals = []
            for chunk in response.iter_raw():
                arrivals.append((time.perf_counter() - started, len(chunk)))
    first, total = arrivals[0][0], arrivals[-1][0]
    assert total >= 10 * 0.25
    assert first < 0.25 * 3  # the first sentence, not the whole text
    assert len(arrivals) >= 5  # many chunks spread over time, not one body at the end


def test_a_client_that_disconnects_stops_synthesis():
    engine = FakeSpeechEngine(delay=0.1)
    app = create_app(Settings(preload_on_start=False), speech_registry(engine))
    text = " ".join(f"Sentence {i} of a long text." for i in range(60))
    with serve_in_thread(app) as url:
        body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"}
        with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=30) as response:
            next(response.iter_raw())
        # the connection is closed; at most the sentence in progress and the next one finish
        time.sleep(1.0)
        spoken = len(engine.spoken)
        time.sleep(0.5)
        assert len(engine.spoken) == spoken
        assert spoken <= 6


def test_a_client_that_disconnects_from_tts_stops_synthesis():
    engine = FakeSpeechEngine(delay=0.1)
    app = create_app(Settings(preload_on_start=False), speech_registry(engine))
    text = " ".join(f"Sentence {i} of a long text." for i in range(60))
    with serve_in_thread(app) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/tts", json={"text": text}, timeout=0.5)
        time.sleep(1.0)
        spoken = len(engine.spoken)
        time.sleep(0.5)
        assert len(engine.spoken) == spoken
        assert spoken <= 15


def test_concurrent_requests_take_turns_sentence_by_sentence():
    engine = FakeSpeechEngine(delay=0.05)
    app = create_app(Settings(preload_on_start=False), speech_registry(engine))
    texts = {"a": " ".join(f"Alpha {i}." for i in range(6)),
             "b": " ".join(f"Bravo {i}." for i in range(6))}
    with serve_in_thread(app) as url:
        results: dict[str, int] = {}

        def fetch(key: str) -> None:
            results[key] = httpx.post(f"{url}/v1/tts", json={"text": texts[key]},
                                      timeout=30).status_code

        threads = [threading.Thread(target=fetch, args=(k,)) for k in texts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == {"a": 200, "b": 200}
    order = [text.split()[0] for text, _ in engine.spoken]
    first_bravo = order.index("Bravo")
    assert "Alpha" in order[first_bravo:]  # interleaved: neither request waited for the other
