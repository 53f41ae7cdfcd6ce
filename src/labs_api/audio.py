"""Turning float samples into the audio formats OpenAI's speech endpoint offers, incrementally.

Every speech engine yields float32 mono samples in [-1, 1]; an ``AudioEncoder`` turns them into
bytes of one format as they come, so a response can stream sentence by sentence. mp3, opus, aac
and flac go through FFmpeg's encoders and muxers (PyAV); wav is a 44-byte header and the samples;
pcm is raw samples. Nothing here knows about HTTP.
"""

from __future__ import annotations

import contextlib
import io
import struct
import wave
from abc import ABC, abstractmethod
from fractions import Fraction
from typing import Any, Literal, get_args

import numpy as np

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)

MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Ogg Opus, as OpenAI sends it
    "aac": "audio/aac",  # ADTS frames: streamable, unlike MP4
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",  # raw signed 16-bit little-endian mono at PCM_SAMPLE_RATE
}

#: OpenAI's ``pcm`` is 24 kHz 16-bit mono, and clients play it at that rate, so we resample to it.
PCM_SAMPLE_RATE = 24_000
#: Opus runs at 8/12/16/24/48 kHz; 24 kHz keeps everything a 22.05 or 24 kHz voice has.
OPUS_SAMPLE_RATE = 24_000
#: A streamed WAV does not know its length up front: the size fields say "as long as it goes".
UNKNOWN_SIZE = 0xFFFFFFFF


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to signed 16-bit (values outside are clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A complete 16-bit mono WAV file with exact sizes (Python's ``wave`` writes the header)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(to_int16(samples).tobytes())
    return buffer.getvalue()


def streaming_wav_header(sample_rate: int, channels: int = 1, sample_width: int = 2) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV whose length is not known yet.

    The RIFF and data sizes are the largest values the fields hold: readers take the data as
    running to the end of the stream (Python's ``wave`` reads until the bytes stop).
    """
    block_align = channels * sample_width
    return (
        struct.pack("<4sI4s", b"RIFF", UNKNOWN_SIZE, b"WAVE")
        + struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, channels, sample_rate,
                      sample_rate * block_align, block_align, sample_width * 8)
        + struct.pack("<4sI", b"data", UNKNOWN_SIZE - 36)
    )


class AudioEncoder(ABC):
    """Encodes one stream of samples: ``start()``, then ``push()`` per piece, then ``finish()``.

    Each call returns the bytes that are ready (possibly none). ``close()`` releases what an
    abandoned stream holds.
    """

    media_type: str
    #: The sample rate of the encoded audio (may differ from the input's).
    sample_rate: int

    def __init__(self, input_rate: int) -> None:
        self.input_rate = input_rate

    def start(self) -> bytes:
        return b""

    @abstractmethod
    def push(self, samples: np.ndarray) -> bytes: ...

    def finish(self) -> bytes:
        return b""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default holds none."""


class WavEncoder(AudioEncoder):
    """A streamed WAV: a header with open-ended sizes, then 16-bit samples at the input rate."""

    media_type = MEDIA_TYPES["wav"]

    def __init__(self, input_rate: int) -> None:
        super().__init__(input_rate)
        self.sample_rate = input_rate

    def start(self) -> bytes:
        return streaming_wav_header(self.sample_rate)

    def push(self, samples: np.ndarray) -> bytes:
        return to_int16(samples).tobytes()


def _frame(av: Any, samples: np.ndarray, rate: int, pts: int) -> Any:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt",
        layout="mono",
    )
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


class PcmEncoder(AudioEncoder):
    """Raw signed 16-bit little-endian mono, resampled (libswresample) to ``PCM_SAMPLE_RATE``."""

    media_type = MEDIA_TYPES["pcm"]

    def __init__(self, input_rate: int, output_rate: int = PCM_SAMPLE_RATE) -> None:
        super().__init__(input_rate)
        import av

        self._av = av
        self.sample_rate = output_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=output_rate)
        self._pts = 0

    def _convert(self, frame: Any) -> bytes:
        return b"".join(
            out.to_ndarray().astype("<i2", copy=False).tobytes()
            for out in self._resampler.resample(frame)
        )

    def push(self, samples: np.ndarray) -> bytes:
        if samples.size == 0:
            return b""
        frame = _frame(self._av, samples, self.input_rate, self._pts)
        self._pts += samples.size
        return self._convert(frame)

    def finish(self) -> bytes:
        return self._convert(None)


class _Sink:
    """A write-only file for PyAV: not seekable, so muxers write a streamable layout."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


# format -> (muxer, encoder, output rate or None for the input's, bit rate, muxer options)
_CONTAINERS: dict[str, tuple[str, str, int | None, int | None, dict[str, str]]] = {
    "mp3": ("mp3", "libmp3lame", None, 64_000, {}),
    # page_duration: close an Ogg page every 100 ms instead of every second, to stream promptly
    "opus": ("ogg", "libopus", OPUS_SAMPLE_RATE, 32_000, {"page_duration": "100000"}),
    "aac": ("adts", "aac", None, 64_000, {}),
    "flac": ("flac", "flac", None, None, {}),
}


class ContainerEncoder(AudioEncoder):
    """mp3, opus (Ogg), aac (ADTS) or flac through PyAV, written to a stream as packets come."""

    def __init__(self, response_format: str, input_rate: int) -> None:
        super().__init__(input_rate)
        import av

        self._av = av
        muxer, codec, rate, bit_rate, options = _CONTAINERS[response_format]
        self.media_type = MEDIA_TYPES[response_format]
        self.sample_rate = rate or input_rate
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=muxer, options=options,
                                  container_options={"flush_packets": "1"})
        self._stream = self._container.add_stream(codec, rate=self.sample_rate, layout="mono")
        if bit_rate:
            self._stream.bit_rate = bit_rate
        self._pts = 0
        self._closed = False

    def _mux(self, frame: Any) -> bytes:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def push(self, samples: np.ndarray) -> bytes:
        if samples.size == 0:
            return b""
        frame = _frame(self._av, samples, self.input_rate, self._pts)
        self._pts += samples.size
        return self._mux(frame)

    def finish(self) -> bytes:
        data = self._mux(None)
        self._container.close()
        self._closed = True
        return data + self._sink.take()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._container.close()


def audio_encoder(response_format: str, input_rate: int) -> AudioEncoder:
    """The encoder for one of ``RESPONSE_FORMATS``, fed with samples at ``input_rate``."""
    if response_format == "wav":
        return WavEncoder(input_rate)
    if response_format == "pcm":
        return PcmEncoder(input_rate)
    if response_format in _CONTAINERS:
        return ContainerEncoder(response_format, input_rate)
    raise ValueError(f"unknown audio format {response_format!r}; one of {RESPONSE_FORMATS}")


def time_stretch(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """Play ``samples`` ``speed`` times faster without changing the pitch (FFmpeg's atempo).

    atempo is time-domain overlap-add (WSOLA): no resampling. Each stage takes 0.5–2.0, so
    speeds outside that range chain stages (0.25 = 0.5 × 0.5, 4 = 2 × 2).
    """
    if speed == 1.0 or samples.size == 0:
        return samples
    import av

    stages: list[float] = []
    rest = speed
    while rest < 0.5:
        stages.append(0.5)
        rest /= 0.5
    while rest > 2.0:
        stages.append(2.0)
        rest /= 2.0
    stages.append(rest)
    graph = av.filter.Graph()
    nodes = [graph.add_abuffer(sample_rate=sample_rate, format="flt", layout="mono",
                               time_base=Fraction(1, sample_rate))]
    nodes += [graph.add("atempo", f"{stage:.6f}") for stage in stages]
    nodes.append(graph.add("abuffersink"))
    graph.link_nodes(*nodes).configure()
    graph.push(_frame(av, samples, sample_rate, 0))
    graph.push(None)
    out: list[np.ndarray] = []
    while True:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            break
        out.append(frame.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
