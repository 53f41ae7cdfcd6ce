"""Speech-to-text: real-time factor through the server vs faster-whisper called directly, time to
the first streamed delta, four concurrent clients, and the word error rate of the voice loop
(our Piper voice, transcribed back) per upload format.

    real-time factor (RTF) = transcription seconds / audio seconds   (< 1: faster than real time)
    server vs direct       = direct seconds / server seconds         (goal: >= 0.9)

The clips are spoken by the bundled Piper voice. faster-whisper runs directly in this process,
with the server's settings (bundled tiny.en, LABS_STT_* defaults: 1 thread, float32, beam 5,
VAD), in turn with the server (``python -m labs_api``, started by the script) on the same audio.

Usage: .venv/bin/python benchmarks/transcription_latency.py [--runs 3]
Prints tables and writes benchmarks/results/transcription_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from common import labs_server, median, percentile, print_table, write_results

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.wer

from tests.wer import word_error_rate  # noqa: E402

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Every voice application needs a transcription endpoint.",
    "Please call the front desk before noon tomorrow.",
    "The weather was cold and windy, so we stayed inside.",
    "She opened the window and let the fresh air in.",
    "Our server answers questions without any network connection.",
    "A good cup of coffee makes the morning much better.",
    "They walked along the river until the sun went down.",
)
URL = "/v1/audio/transcriptions"


def speak(seconds: float) -> tuple[str, np.ndarray, int]:
    """Sentences spoken by the bundled voice until the clip lasts ``seconds``; cut there."""
    from labs_api.engines.speech.factory import load_speech_engine
    from labs_api.settings import Settings

    settings = Settings()
    voice = load_speech_engine(settings.tts_model, settings)
    try:
        spoken, parts, total = [], [], 0
        while total < seconds * voice.sample_rate:
            sentence = SENTENCES[len(spoken) % len(SENTENCES)]
            samples = asyncio.run(voice.synthesize_all(sentence, voice.default_voice))
            pause = np.zeros(int(0.3 * voice.sample_rate), dtype=np.float32)
            parts += [samples, pause]
            spoken.append(sentence)
            total += samples.size + pause.size
        clip = np.concatenate(parts)[: int(seconds * voice.sample_rate)]
        return " ".join(spoken), clip, voice.sample_rate
    finally:
        voice.close()


class Direct:
    """faster-whisper in this process, with the server's model and settings."""

    def __init__(self) -> None:
        from faster_whisper import WhisperModel

        from labs_api.engines.transcription.factory import model_source
        from labs_api.settings import Settings

        self.settings = Settings()
        self.model = WhisperModel(model_source(self.settings.stt_model), device="cpu",
                                  compute_type=self.settings.stt_compute_type,
                                  cpu_threads=self.settings.stt_threads)
        self.once(np.zeros(16_000, dtype=np.float32))  # warm up

    def once(self, clip16k: np.ndarray) -> tuple[float, str]:
        started = time.perf_counter()
        segments, _ = self.model.transcribe(clip16k, beam_size=self.settings.stt_beam_size,
                                            vad_filter=True)
        text = "".join(s.text for s in segments)
        return time.perf_counter() - started, text.strip()


def post(client: httpx.Client, name: str, data: bytes, **fields) -> httpx.Response:
    response = client.post(URL, data={"model": "whisper-1", **fields},
                           files={"file": (name, data)})
    response.raise_for_status()
    return response


def streamed(client: httpx.Client, data: bytes) -> tuple[float, float, str]:
    """(seconds to the first delta, seconds to the end, the final text)."""
    started = time.perf_counter()
    first, text = None, ""
    with client.stream("POST", URL, data={"model": "whisper-1", "stream": "true"},
                       files={"file": ("clip.wav", data)}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event["type"] == "transcript.text.delta" and first is None:
                first = time.perf_counter() - started
            if event["type"] == "transcript.text.done":
                text = event["text"]
    return first or float("nan"), time.perf_counter() - started, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args()

    from labs_api.audio import wav_bytes
    from labs_api.audio_decode import decode_audio

    text30, clip30, rate = speak(30.0)
    text10, clip10, _ = speak(10.0)
    wav30, wav10 = wav_bytes(clip30, rate), wav_bytes(clip10, rate)
    samples30 = decode_audio(wav30, 600).samples
    engine = Direct()

    rows: list[dict[str, object]] = []
    with labs_server() as base, httpx.Client(base_url=base, timeout=600) as client:
        post(client, "warm.wav", wav10)
        server, direct_times = [], []
        for _ in range(args.runs):  # alternating, so that other load hits both alike
            seconds, direct_text = engine.once(samples30)
            direct_times.append(seconds)
            started = time.perf_counter()
            body = post(client, "clip.wav", wav30).json()
            server.append(time.perf_counter() - started)
        direct = {"seconds": median(direct_times), "text": direct_text}
        stream = [streamed(client, wav30) for _ in range(args.runs)]
        rows.append({"measure": "30 s clip, direct faster-whisper", "seconds": direct["seconds"],
                     "rtf": direct["seconds"] / 30, "wer": word_error_rate(text30,
                                                                          direct["text"])})
        rows.append({"measure": "30 s clip, server (json)", "seconds": median(server),
                     "rtf": median(server) / 30, "wer": word_error_rate(text30, body["text"]),
                     "vs_direct": direct["seconds"] / median(server)})
        rows.append({"measure": "30 s clip, server (stream)",
                     "seconds": median([s[1] for s in stream]),
                     "first_delta_s": median([s[0] for s in stream]),
                     "rtf": median([s[1] for s in stream]) / 30,
                     "wer": word_error_rate(text30, stream[-1][2])})

        def one_client(_: int) -> float:
            started = time.perf_counter()
            with httpx.Client(base_url=base, timeout=600) as own:
                post(own, "clip.wav", wav10)
            return time.perf_counter() - started

        walls, p95s = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                latencies = list(pool.map(one_client, range(4)))
            walls.append(time.perf_counter() - started)
            p95s.append(percentile(latencies, 95))
        rows.append({"measure": "4 clients x 10 s clip at once", "seconds": median(walls),
                     "p95_s": median(p95s), "rtf": median(walls) / 40})

        loop_text = " ".join(SENTENCES)
        for fmt, name in (("wav", "loop.wav"), ("mp3", "loop.mp3"), ("opus", "loop.ogg")):
            audio = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy",
                                                          "input": loop_text,
                                                          "response_format": fmt}).content
            heard = post(client, name, audio).json()["text"]
            rows.append({"measure": f"voice loop WER, {fmt}", "wer": word_error_rate(loop_text,
                                                                                     heard),
                         "bytes": len(audio)})

    columns = ["measure", "seconds", "rtf", "vs_direct", "first_delta_s", "p95_s", "wer"]
    print_table(f"Speech-to-text, whisper-tiny.en, median of {args.runs} runs",
                columns, [[row.get(c, "") for c in columns] for row in rows])
    write_results("transcription_latency", {"benchmark": "transcription_latency",
                                            "runs": args.runs, "rows": rows,
                                            "cpu": cpu_name()})


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
