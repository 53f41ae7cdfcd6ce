"""Speech on the real server with the bundled Piper voice: the spec's /v1/tts, OpenAI's
/v1/audio/speech through the official client, every format, speed, errors and streaming."""

from __future__ import annotations

import io
import time
import wave

import av
import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow

VOICE = "en_US-joe-medium"
VOICE_RATE = 22_050
ONE = "The quick brown fox jumps over the lazy dog."
THREE = (ONE + " Speech synthesis turns written words into sound."
         " Every sentence is spoken as soon as it is ready.")
TEN = " ".join(f"This is sentence number {n}, spoken by the default voice." for n in range(10))


def read_wav(data: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnchannels() == 1 and reader.getsampwidth() == 2
        return reader.getframerate(), np.frombuffer(reader.readframes(2**31 - 1), dtype="<i2")


def seconds_of_wav(data: bytes) -> float:
    rate, samples = read_wav(data)
    return samples.size / rate


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))


def decode(data: bytes) -> tuple[str, float, np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().astype(np.float64).reshape(-1) for f in container.decode(stream)]
        rate = stream.codec_context.sample_rate
        samples = np.concatenate(frames)
        if np.abs(samples).max() > 2:  # integer sample formats (flac decodes to s16)
            samples = samples / 32768.0
        return stream.codec_context.name, samples.size / rate, samples


def speech(base_url: str, **body) -> httpx.Response:
    payload = {"model": "tts-1", "voice": "alloy", "input": ONE, **body}
    return httpx.post(f"{base_url}/v1/audio/speech", json=payload, timeout=120)


def test_the_voice_is_listed_as_a_model(base_url):
    ids = [m["id"] for m in httpx.get(f"{base_url}/v1/models").json()["data"]]
    assert VOICE in ids
    assert httpx.get(f"{base_url}/v1/models/{VOICE}").json()["id"] == VOICE
    ready = httpx.get(f"{base_url}/ready").json()
    assert {"id": VOICE, "kind": "speech", "state": "ready"}.items() <= next(
        m for m in ready["models"] if m["id"] == VOICE).items()


def test_spec_curl_example_gives_a_wav_of_speech(base_url):
    # curl -X POST .../v1/tts -H "Content-Type: application/json" -d '{"text": "Hello world"}'
    response = httpx.post(f"{base_url}/v1/tts", json={"text": "Hello world"}, timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    rate, samples = read_wav(response.content)
    assert rate == VOICE_RATE
    assert 0.4 < samples.size / rate < 3.0
    assert rms(samples) > 0.03  # speech, not silence
    assert np.count_nonzero(np.abs(samples) > 3000) > rate * 0.05


def test_tts_with_the_model_named(base_url):
    response = httpx.post(f"{base_url}/v1/tts", json={"text": ONE, "model": VOICE}, timeout=60)
    assert response.status_code == 200
    assert seconds_of_wav(response.content) > 1.5


def test_duration_grows_with_the_text(base_url):
    one = httpx.post(f"{base_url}/v1/tts", json={"text": ONE}, timeout=60).content
    three = httpx.post(f"{base_url}/v1/tts", json={"text": THREE}, timeout=60).content
    assert seconds_of_wav(three) > 2.2 * seconds_of_wav(one)


@pytest.mark.parametrize(("fmt", "codec"),
                         [("mp3", "mp3float"), ("opus", "opus"), ("aac", "aac"),
                          ("flac", "flac")])
def test_each_compressed_format_decodes_to_speech(base_url, fmt, codec):
    reference = seconds_of_wav(speech(base_url, response_format="wav").content)
    response = speech(base_url, response_format=fmt)
    assert response.status_code == 200
    got_codec, seconds, samples = decode(response.content)
    assert got_codec == codec
    assert seconds == pytest.approx(reference, rel=0.25)  # Piper's durations vary a little
    assert float(np.sqrt(np.mean(samples**2))) > 0.03


def test_wav_from_audio_speech_is_at_the_voice_rate(base_url):
    response = speech(base_url, response_format="wav")
    assert response.headers["content-type"] == "audio/wav"
    rate, samples = read_wav(response.content)
    assert rate == VOICE_RATE and rms(samples) > 0.03


def test_pcm_is_24_khz_16_bit_mono(base_url):
    reference = seconds_of_wav(speech(base_url, response_format="wav").content)
    response = speech(base_url, response_format="pcm")
    samples = np.frombuffer(response.content, dtype="<i2")
    assert samples.size / 24_000 == pytest.approx(reference, rel=0.25)
    assert rms(samples) > 0.03


def test_speed_two_halves_the_duration_and_half_doubles_it(base_url):
    normal = seconds_of_wav(speech(base_url, input=THREE, response_format="wav").content)
    fast = seconds_of_wav(speech(base_url, input=THREE, response_format="wav",
                                 speed=2.0).content)
    slow = seconds_of_wav(speech(base_url, input=THREE, response_format="wav",
                                 speed=0.5).content)
    assert 0.4 < fast / normal < 0.6
    assert 1.7 < slow / normal < 2.3


@pytest.mark.parametrize("voice", ["alloy", "echo", "fable", "onyx", "nova", "shimmer", "ash",
                                   "ballad", "coral", "sage", "verse", VOICE])
def test_openai_voices_map_to_the_served_voice(base_url, voice):
    response = speech(base_url, voice=voice, response_format="wav")
    assert response.status_code == 200
    assert rms(read_wav(response.content)[1]) > 0.03


@pytest.mark.parametrize(
    ("endpoint", "body", "status", "param"),
    [
        ("/v1/tts", {"text": ""}, 422, "text"),
        ("/v1/tts", {"text": "word " * 1000}, 422, "text"),
        ("/v1/tts", {"text": "Hi.", "model": "suno/bark"}, 404, "model"),
        ("/v1/audio/speech", {"input": ""}, 422, "input"),
        ("/v1/audio/speech", {"input": "x" * 4097}, 422, "input"),
        ("/v1/audio/speech", {"voice": "robot"}, 400, "voice"),
        ("/v1/audio/speech", {"model": "no-such-model"}, 404, "model"),
        ("/v1/audio/speech", {"response_format": "ogg"}, 422, "response_format"),
        ("/v1/audio/speech", {"speed": 5}, 422, "speed"),
        ("/v1/audio/speech", {"speed": 0.1}, 422, "speed"),
        ("/v1/audio/speech", {"instructions": "whisper"}, 422, "instructions"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(base_url, endpoint, body, status, param):
    if endpoint == "/v1/audio/speech":
        body = {"model": "tts-1", "voice": "alloy", "input": ONE, **body}
    started = time.perf_counter()
    response = httpx.post(f"{base_url}{endpoint}", json=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
    assert time.perf_counter() - started < 5


def test_openai_client_speech_create(openai_client):
    response = openai_client.audio.speech.create(model="tts-1", voice="alloy", input=ONE)
    codec, seconds, samples = decode(response.content)
    assert codec == "mp3float" and seconds > 1.5
    wav = openai_client.audio.speech.create(model="gpt-4o-mini-tts", voice="nova", input=ONE,
                                            response_format="wav", speed=1.5)
    rate, pcm = read_wav(wav.content)
    assert rate == VOICE_RATE and pcm.size / rate < seconds


def test_openai_client_streaming_response(openai_client, tmp_path):
    started = time.perf_counter()
    arrivals = []
    with openai_client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="coral", input=TEN, response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        data = b""
        for chunk in response.iter_bytes():
            arrivals.append(time.perf_counter() - started)
            data += chunk
    assert len(data) / 2 / 24_000 > 20  # ten sentences of speech
    assert arrivals[0] < 0.5 * arrivals[-1]  # the first audio came long before the end
    target = tmp_path / "speech.mp3"
    with openai_client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=ONE
    ) as response:
        response.stream_to_file(target)
    assert decode(target.read_bytes())[0] == "mp3float"


def test_openai_client_errors_raise_the_matching_exceptions(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.audio.speech.create(model="no-such-model", voice="alloy", input=ONE)
    with pytest.raises(openai.BadRequestError):
        openai_client.audio.speech.create(model="tts-1", voice="robot", input=ONE)
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client.audio.speech.create(model="tts-1", voice="alloy", input=ONE, speed=9)


def test_first_audio_arrives_long_before_a_long_text_is_done(base_url):
    body = {"model": "tts-1", "voice": "alloy", "input": TEN, "response_format": "wav"}
    started = time.perf_counter()
    with httpx.stream("POST", f"{base_url}/v1/audio/speech", json=body,
                      timeout=120) as response:
        chunks = [(time.perf_counter() - started, len(c)) for c in response.iter_raw()]
    first, last = chunks[0][0], chunks[-1][0]
    assert len(chunks) >= 5
    assert first < 0.4 * last
