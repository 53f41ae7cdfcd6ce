"""Encoding samples to each response format, incrementally, and time stretching."""

from __future__ import annotations

import io
import struct
import wave

import av
import numpy as np
import pytest

from labs_api.audio import (
    MEDIA_TYPES,
    PCM_SAMPLE_RATE,
    RESPONSE_FORMATS,
    audio_encoder,
    streaming_wav_header,
    time_stretch,
    to_int16,
    wav_bytes,
)

RATE = 22_050


def tone(seconds: float, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(fmt: str, pieces: list[np.ndarray], rate: int = RATE) -> tuple[list[bytes], object]:
    encoder = audio_encoder(fmt, rate)
    parts = [encoder.start(), *(encoder.push(p) for p in pieces), encoder.finish()]
    return parts, encoder


def test_to_int16_scales_and_clips():
    assert to_int16(np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5])).tolist() == [
        0, 32767, -32767, 32767, -32767, 16384]


def test_wav_bytes_is_a_complete_file_with_exact_sizes():
    data = wav_bytes(tone(0.5), RATE)
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (
            RATE, 1, 2)
        assert reader.getnframes() == int(0.5 * RATE)
    assert len(data) == 44 + 2 * int(0.5 * RATE)


def test_streaming_wav_header_is_44_bytes_with_open_sizes():
    header = streaming_wav_header(24_000)
    assert len(header) == 44
    riff, size, wave_id = struct.unpack("<4sI4s", header[:12])
    assert (riff, size, wave_id) == (b"RIFF", 0xFFFFFFFF, b"WAVE")
    assert struct.unpack("<I", header[24:28])[0] == 24_000
    assert header[36:40] == b"data"


def test_streamed_wav_reads_with_the_wave_module():
    parts, _ = encode("wav", [tone(0.3), tone(0.2)])
    assert len(parts[0]) == 44  # the header goes out first, before any audio
    with wave.open(io.BytesIO(b"".join(parts))) as reader:
        samples = np.frombuffer(reader.readframes(2**31 - 1), dtype="<i2")
    assert samples.size == int(0.3 * RATE) + int(0.2 * RATE)


def test_pcm_is_resampled_to_24_khz():
    parts, encoder = encode("pcm", [tone(1.0), tone(0.5)])
    assert encoder.sample_rate == PCM_SAMPLE_RATE
    samples = np.frombuffer(b"".join(parts), dtype="<i2")
    assert samples.size == pytest.approx(1.5 * PCM_SAMPLE_RATE, abs=2)
    crossings = np.count_nonzero(np.diff(np.signbit(samples[: PCM_SAMPLE_RATE])))
    assert crossings == pytest.approx(880, abs=4)  # still 440 Hz


def test_pcm_at_24_khz_input_passes_through_unchanged_in_length():
    parts, _ = encode("pcm", [tone(0.5, 24_000)], rate=24_000)
    assert len(b"".join(parts)) == 2 * 12_000


@pytest.mark.parametrize(("fmt", "codec", "container"),
                         [("mp3", "mp3float", "mp3"), ("opus", "opus", "ogg"),
                          ("aac", "aac", "aac"), ("flac", "flac", "flac")])
def test_compressed_formats_decode_to_the_same_audio(fmt, codec, container):
    parts, encoder = encode(fmt, [tone(1.0), tone(1.0, freq=660.0), tone(0.5)])
    assert encoder.media_type == MEDIA_TYPES[fmt]
    data = b"".join(parts)
    assert sum(1 for p in parts[1:-1] if p) >= 2  # bytes come out while pieces go in
    with av.open(io.BytesIO(data)) as decoded:
        assert decoded.format.name == container
        stream = decoded.streams.audio[0]
        assert stream.codec_context.name == codec
        frames = [f.to_ndarray().astype(np.float64).reshape(-1) for f in decoded.decode(stream)]
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(frames)
    assert samples.size / rate == pytest.approx(2.5, abs=0.12)
    peak = np.abs(samples).max()
    assert peak > (0.3 * 32768 if peak > 2 else 0.3)


def test_an_abandoned_container_encoder_closes_quietly():
    encoder = audio_encoder("mp3", RATE)
    encoder.push(tone(0.5))
    encoder.close()
    encoder.close()


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        audio_encoder("ogg", RATE)
    assert set(RESPONSE_FORMATS) == {"mp3", "opus", "aac", "flac", "wav", "pcm"}


@pytest.mark.parametrize("speed", [0.25, 0.5, 0.8, 1.5, 2.0, 4.0])
def test_time_stretch_changes_duration_not_pitch(speed):
    stretched = time_stretch(tone(2.0), RATE, speed)
    assert stretched.size / RATE == pytest.approx(2.0 / speed, rel=0.03)
    middle = stretched[stretched.size // 4: stretched.size // 4 + RATE // 4]
    crossings = np.count_nonzero(np.diff(np.signbit(middle)))
    assert crossings == pytest.approx(2 * 440 / 4, rel=0.05)  # still 440 Hz


def test_time_stretch_at_speed_one_or_on_nothing_is_a_no_op():
    samples = tone(0.1)
    assert time_stretch(samples, RATE, 1.0) is samples
    assert time_stretch(np.zeros(0, np.float32), RATE, 2.0).size == 0
