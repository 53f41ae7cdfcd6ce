"""Speech latency: real-time factor and time to first audio, for a 1- and a 10-sentence text.

Measured twice: on the engine directly (samples, no HTTP), and through the HTTP server, which
this script starts as a subprocess (``python -m labs_api``) and calls with /v1/audio/speech
(streamed wav and mp3) and /v1/tts (one complete WAV).

    real-time factor (RTF) = synthesis seconds / audio seconds   (< 1: faster than real time)
    time to first audio    = request sent -> first audio byte (HTTP), or -> first samples (engine)

Usage: .venv/bin/python benchmarks/speech_latency.py [--runs 5] [--model en_US-joe-medium]
Prints a table and writes benchmarks/results/speech_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import statistics
import time
import wave
from pathlib import Path

import av
import httpx
from common import labs_server  # benchmarks/common.py (the script's own folder)

RESULTS = Path(__file__).parent / "results" / "speech_latency.json"

TEXTS = {
    "1 sentence": "The quick brown fox jumps over the lazy dog near the river bank.",
    "10 sentences": " ".join(
        f"This is sentence number {n} of the benchmark, spoken by the default voice."
        for n in range(1, 11)
    ),
}


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as reader:
        return len(reader.readframes(2**31 - 1)) / reader.getsampwidth() / reader.getframerate()


def decoded_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


def summarise(samples: list[dict[str, float]]) -> dict[str, float]:
    first = [s["first_s"] for s in samples]
    total = [s["total_s"] for s in samples]
    audio = [s["audio_s"] for s in samples]
    return {
        "runs": len(samples),
        "audio_s": round(statistics.median(audio), 3),
        "first_audio_ms": round(1000 * statistics.median(first), 1),
        "first_audio_ms_max": round(1000 * max(first), 1),
        "total_s": round(statistics.median(total), 3),
        "rtf": round(statistics.median(t / a for t, a in zip(total, audio, strict=True)), 4),
    }


# --- engine directly ----------------------------------------------------------------------


def bench_engine(model: str, runs: int) -> list[dict[str, object]]:
    from labs_api.engines.speech.factory import load_speech_engine
    from labs_api.settings import Settings

    settings = Settings(tts_model=model)
    started = time.perf_counter()
    engine = load_speech_engine(model, settings)
    load_s = time.perf_counter() - started
    print(f"engine {model}: loaded in {load_s:.2f} s, {engine.sample_rate} Hz, "
          f"onnxruntime threads {settings.tts_threads}")

    async def once(text: str) -> dict[str, float]:
        begun = time.perf_counter()
        first = None
        samples = 0
        async for piece in engine.stream(text, engine.default_voice):
            first = first if first is not None else time.perf_counter() - begun
            samples += piece.size
        return {"first_s": first or 0.0, "total_s": time.perf_counter() - begun,
                "audio_s": samples / engine.sample_rate}

    rows = []
    try:
        asyncio.run(once("Warm up."))
        for label, text in TEXTS.items():
            measured = [asyncio.run(once(text)) for _ in range(runs)]
            rows.append({"path": "engine", "request": "samples", "text": label,
                         **summarise(measured)})
    finally:
        engine.close()
    return rows


# --- through the HTTP server ----------------------------------------------------------------


def speech_server(model: str) -> contextlib.AbstractContextManager[str]:
    return labs_server({"LABS_TTS_MODEL": model})


def timed_post(client: httpx.Client, url: str, body: dict[str, object]) -> tuple[float, float,
                                                                                  bytes]:
    begun = time.perf_counter()
    first = None
    parts = []
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if chunk and first is None:
                first = time.perf_counter() - begun
            parts.append(chunk)
    return first or 0.0, time.perf_counter() - begun, b"".join(parts)


def bench_http(model: str, runs: int) -> list[dict[str, object]]:
    requests = [
        ("/v1/audio/speech wav", "/v1/audio/speech", "wav"),
        ("/v1/audio/speech mp3", "/v1/audio/speech", "mp3"),
        ("/v1/tts (whole WAV)", "/v1/tts", "wav"),
    ]
    rows = []
    with speech_server(model) as base, httpx.Client(timeout=300) as client:
        for name, path, fmt in requests:
            for label, text in TEXTS.items():
                if path == "/v1/tts":
                    body: dict[str, object] = {"text": text}
                else:
                    body = {"model": "tts-1", "voice": "alloy", "input": text,
                            "response_format": fmt}
                timed_post(client, base + path, body)  # warm up this path
                measured = []
                for _ in range(runs):
                    first, total, data = timed_post(client, base + path, body)
                    audio = wav_seconds(data) if fmt == "wav" else decoded_seconds(data)
                    measured.append({"first_s": first, "total_s": total, "audio_s": audio})
                rows.append({"path": "http", "request": name, "text": label,
                             **summarise(measured)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per cell (median)")
    parser.add_argument("--model", default="en_US-joe-medium", help="LABS_TTS_MODEL to measure")
    parser.add_argument("--skip-http", action="store_true", help="only the engine directly")
    args = parser.parse_args()

    rows = bench_engine(args.model, args.runs)
    if not args.skip_http:
        rows += bench_http(args.model, args.runs)

    columns = ["path", "request", "text", "audio_s", "first_audio_ms", "first_audio_ms_max",
               "total_s", "rtf"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print(f"\nSpeech latency, {args.model}, median of {args.runs} runs "
          "(rtf = synthesis s / audio s)")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[c]).ljust(w)
                                for c, w in zip(columns, widths, strict=True)) + " |")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "speech_latency",
        "model": args.model,
        "runs": args.runs,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "texts": TEXTS,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
