"""Audio files for upload tests, written by FFmpeg through PyAV: mono float samples in, the
bytes of a file of each common format out."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from labs_api.audio import wav_bytes

#: format -> (container, codec, encoder rate, file name suffix)
FORMATS: dict[str, tuple[str, str, int, str]] = {
    "mp3": ("mp3", "libmp3lame", 22_050, "mp3"),
    "flac": ("flac", "flac", 22_050, "flac"),
    "opus": ("ogg", "libopus", 48_000, "ogg"),
    "webm": ("webm", "libopus", 48_000, "webm"),
    "m4a": ("ipod", "aac", 24_000, "m4a"),
}


def audio_file(samples: np.ndarray, rate: int, fmt: str) -> tuple[str, bytes]:
    """(file name, bytes) of ``samples`` (float32 mono at ``rate``) encoded as ``fmt``."""
    if fmt == "wav":
        return "audio.wav", wav_bytes(samples, rate)
    container_name, codec, codec_rate, suffix = FORMATS[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_name) as container:
        stream = container.add_stream(codec, rate=codec_rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono",
                                      rate=codec_rate)
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32).reshape(1, -1),
                                           format="flt", layout="mono")
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = 0
        for piece in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(piece):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return f"audio.{suffix}", buffer.getvalue()
