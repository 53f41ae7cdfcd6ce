"""A finished transcription in each of OpenAI's response formats: json, text, srt, vtt and
verbose_json (with segments and, when asked, words)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from labs_api.engines.transcription.base import Segment, TranscriptionInfo

MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json",
               "text": "text/plain; charset=utf-8", "srt": "application/x-subrip",
               "vtt": "text/vtt; charset=utf-8"}


def full_text(segments: Sequence[Segment]) -> str:
    """The transcript: the segments' text joined (each starts with its own space), trimmed."""
    return "".join(s.text for s in segments).strip()


def usage(info: TranscriptionInfo) -> dict[str, Any]:
    """OpenAI's duration usage (whisper-1 reports whole seconds, rounded up)."""
    return {"type": "duration", "seconds": math.ceil(round(info.duration, 3))}


def json_body(info: TranscriptionInfo, segments: Sequence[Segment]) -> dict[str, Any]:
    return {"text": full_text(segments), "usage": usage(info)}


def verbose_body(info: TranscriptionInfo, segments: Sequence[Segment], *, task: str,
                 language_name: str, with_segments: bool = True,
                 with_words: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"task": task, "language": language_name,
                            "duration": round(info.duration, 3), "text": full_text(segments)}
    if with_segments:
        body["segments"] = [segment_body(s) for s in segments]
    if with_words:
        body["words"] = [{"word": w.word.strip(), "start": round(w.start, 3),
                          "end": round(w.end, 3)} for s in segments for w in s.words]
    body["usage"] = usage(info)
    return body


def segment_body(segment: Segment) -> dict[str, Any]:
    return {"id": segment.id, "seek": segment.seek, "start": round(segment.start, 3),
            "end": round(segment.end, 3), "text": segment.text, "tokens": list(segment.tokens),
            "temperature": segment.temperature, "avg_logprob": segment.avg_logprob,
            "compression_ratio": segment.compression_ratio,
            "no_speech_prob": segment.no_speech_prob}


def timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS,mmm`` (srt, separator ",") or ``HH:MM:SS.mmm`` (vtt, ".")."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: Sequence[Segment]) -> str:
    cues = [f"{n}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text.strip()}\n"
            for n, s in enumerate(segments, start=1)]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    cues = [f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text.strip()}\n"
            for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def text(segments: Sequence[Segment]) -> str:
    return full_text(segments) + "\n"
