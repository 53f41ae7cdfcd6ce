"""Reading uploaded audio: any common container and codec, decoded by FFmpeg (PyAV), resampled
to 16 kHz mono float32 — what Whisper takes. Nothing here knows about HTTP.

Only audio container formats are opened (``format_whitelist``): FFmpeg's playlist and
concatenation demuxers (HLS, concat, ...) would otherwise follow paths or URLs named inside an
uploaded file. Decoding stops as soon as the audio passes ``max_seconds``, so a small file that
expands into hours of audio costs no more than the limit.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("labs_api.audio_decode")

SAMPLE_RATE = 16_000

#: FFmpeg demuxers an upload may be read with: wav, mp3, flac, ogg (opus, vorbis, flac),
#: matroska/webm, mp4/m4a/mov, raw aac (ADTS), aiff, caf, w64 and amr.
DEMUXERS = ("wav", "mp3", "flac", "ogg", "matroska", "webm", "mov", "mp4", "m4a", "3gp",
            "aac", "aiff", "caf", "w64", "amr", "mpeg")


class AudioDecodeError(ValueError):
    """The data is not audio we can read (corrupt, empty, no audio stream, unknown format)."""


class AudioTooLong(ValueError):
    """The audio lasts longer than the limit."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(f"The audio is longer than {max_seconds:g} seconds, the most this "
                         "server transcribes in one request.")
        self.max_seconds = max_seconds


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    format: str  # the container FFmpeg read it as

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """Decode ``data`` (a whole file) to 16 kHz mono float32 samples in [-1, 1].

    Raises ``AudioDecodeError`` for data that is not readable audio and ``AudioTooLong`` past
    ``max_seconds``. Blocking: call it on a worker thread.
    """
    import av

    if not data:
        raise AudioDecodeError("The file is empty.")
    limit = int(max_seconds * SAMPLE_RATE)
    try:
        container = av.open(io.BytesIO(data), mode="r",
                            options={"format_whitelist": ",".join(DEMUXERS)})
    except (av.FFmpegError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise AudioDecodeError(f"The file could not be read as audio ({_reason(exc)}).") from exc
    try:
        if not container.streams.audio:
            raise AudioDecodeError("The file has no audio stream.")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pieces: list[np.ndarray] = []
        total = 0
        bad_packets = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as exc:  # a damaged packet: skip it
                bad_packets += 1
                if bad_packets > 100 and not pieces:
                    raise AudioDecodeError(f"The audio could not be decoded ({_reason(exc)}).")\
                        from exc
                continue
            for frame in frames:
                frame.pts = None  # the resampler needs no timestamps; bad ones upset it
                for out in resampler.resample(frame):
                    total = _append(pieces, out, total, limit, max_seconds)
        for out in resampler.resample(None):
            total = _append(pieces, out, total, limit, max_seconds)
    except (AudioDecodeError, AudioTooLong):
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise AudioDecodeError(f"The audio could not be decoded ({_reason(exc)}).") from exc
    finally:
        container.close()
    if not pieces and bad_packets:
        raise AudioDecodeError("The audio could not be decoded (every packet was damaged).")
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    np.clip(samples, -1.0, 1.0, out=samples)
    return DecodedAudio(samples, container.format.name)


def _append(pieces: list[np.ndarray], frame, total: int, limit: int, max_seconds: float) -> int:
    samples = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
    total += samples.size
    if total > limit:
        raise AudioTooLong(max_seconds)
    pieces.append(samples)
    return total


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # FFmpeg's messages may name the in-memory file object: keep the reason only.
    return text.split(": '<")[0][:200]
