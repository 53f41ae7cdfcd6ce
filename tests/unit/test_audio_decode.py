"""Reading uploads: any format to 16 kHz mono float32, the duration limit, refused containers."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from labs_api.audio_decode import (
    SAMPLE_RATE,
    AudioDecodeError,
    AudioTooLong,
    decode_audio,
)
from tests.audio_files import FORMATS, audio_file


def stereo_flac(seconds: float, rate: int = 44_100) -> bytes:
    """A 1 kHz tone on the left channel, silence on the right, as 44.1 kHz stereo FLAC."""
    t = np.arange(int(seconds * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    planes = np.stack([left, np.zeros_like(left)]).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="stereo")
        frame.sample_rate, frame.time_base, frame.pts = rate, Fraction(1, rate), 0
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="stereo",
                                      rate=rate)
        for piece in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(piece):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_stereo_44k_becomes_16k_mono_at_the_same_pitch_and_length():
    decoded = decode_audio(stereo_flac(2.0), max_seconds=60)
    assert decoded.format == "flac" and decoded.samples.dtype == np.float32
    assert decoded.seconds == pytest.approx(2.0, abs=0.01)
    spectrum = np.abs(np.fft.rfft(decoded.samples))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / decoded.samples.size
    assert peak_hz == pytest.approx(1000, abs=5)
    assert 0.2 < np.abs(decoded.samples).max() <= 1.0  # the two channels mixed down


@pytest.mark.parametrize("fmt", ["wav", *FORMATS])
def test_each_format_keeps_its_duration(fmt):
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(24_000) / 16_000)).astype(np.float32)
    decoded = decode_audio(audio_file(tone, 16_000, fmt)[1], max_seconds=60)
    assert decoded.seconds == pytest.approx(1.5, abs=0.06)


def test_the_duration_limit_stops_decoding():
    with pytest.raises(AudioTooLong, match="longer than 1.5 seconds"):
        decode_audio(stereo_flac(2.0), max_seconds=1.5)
    assert decode_audio(stereo_flac(1.0), max_seconds=1.5).seconds == pytest.approx(1.0, 0.01)


def test_only_the_listed_containers_are_opened():
    """Sun .au is audio FFmpeg reads, but not a container we list: refused (the same list keeps
    FFmpeg's playlist and concat demuxers, which open other files, away from uploads)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="au") as container:
        stream = container.add_stream("pcm_s16be", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = 16_000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    data = buffer.getvalue()
    with av.open(io.BytesIO(data)) as readable:  # FFmpeg itself reads it
        assert readable.format.name == "au"
    with pytest.raises(AudioDecodeError):
        decode_audio(data, max_seconds=60)


def test_a_concat_listing_of_a_real_file_is_refused(tmp_path):
    target = tmp_path / "real.flac"
    target.write_bytes(stereo_flac(1.0))
    listing = f"ffconcat version 1.0\nfile '{target}'\n".encode()
    with pytest.raises(AudioDecodeError):
        decode_audio(listing, max_seconds=60)


def test_a_video_only_file_has_no_audio_stream():
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        decode_audio(buffer.getvalue(), max_seconds=60)
