"""Fault injection on the real server with the bundled models: each engine runs in a worker
process; SIGSEGV (or SIGSTOP) of a worker mid-request or mid-stream costs only the requests it
held, /health never stops answering, the worker comes back, and the next request is right."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import running_server

pytestmark = pytest.mark.slow

STALL_SECONDS = 4
LONG = {"max_tokens": 400, "temperature": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("isolation") / "server.log"
    with running_server({"LABS_ENGINE_STALL_SECONDS": str(STALL_SECONDS)}, log_path=log) as url:
        yield url


class HealthWatch:
    """Polls /health on a thread while a test runs; every answer must be a quick 200."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get(f"{self.base_url}/health").status_code
                    if status != 200:
                        self.failures.append(f"status {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        assert not self.failures, self.failures
        assert len(self.latencies) > 5
        assert max(self.latencies) < 1.0, max(self.latencies)


def model_state(base_url: str, kind: str) -> dict:
    models = httpx.get(f"{base_url}/ready", timeout=5).json()["models"]
    return next(m for m in models if m["kind"] == kind)


def wait_until_back(base_url: str, kind: str, old_pid: int, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        state = model_state(base_url, kind)
        if state["state"] == "ready" and state["pid"] not in (None, old_pid):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"the {kind} worker did not come back: {model_state(base_url, kind)}")


def chat(base_url: str, text: str, **extra) -> httpx.Response:
    body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": text}],
            "max_tokens": 8, "temperature": 0, **extra}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)


def kill_soon(pid: int, sig: signal.Signals, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), os.kill(pid, sig)))
    thread.start()
    return thread


def test_every_model_runs_in_its_own_worker(server):
    models = httpx.get(f"{server}/ready").json()["models"]
    pids = {m["kind"]: m["pid"] for m in models}
    assert set(pids) == {"chat", "embedding", "speech", "transcription"}
    assert all(pid and pid != os.getpid() for pid in pids.values())
    assert len(set(pids.values())) == len(pids)


def test_chat_worker_crash_mid_request_is_a_503_then_the_next_request_answers(server):
    before = chat(server, "Name a colour.").json()["choices"][0]["message"]["content"]
    pid = model_state(server, "chat")["pid"]
    with HealthWatch(server):
        killer = kill_soon(pid, signal.SIGSEGV, 0.5)
        crashed = chat(server, "Tell me a very long story about the sea.", **LONG)
        killer.join()
        back = wait_until_back(server, "chat", pid)
        after = chat(server, "Name a colour.")
    assert crashed.status_code == 503
    error = crashed.json()["error"]
    assert error["code"] == "engine_restarting" and "SIGSEGV" in error["message"]
    assert int(crashed.headers["Retry-After"]) >= 1
    assert back < 10, f"the chat worker took {back:.1f} s to come back"
    assert after.status_code == 200
    assert after.json()["choices"][0]["message"]["content"] == before  # greedy: same answer
    assert model_state(server, "chat")["restarts"] >= 1
    metrics = httpx.get(f"{server}/metrics").text
    assert 'labs_engine_restarts_total{kind="chat",model="SmolLM2-135M-Instruct"}' in metrics


def test_chat_worker_crash_mid_stream_ends_the_stream_in_band(server):
    pid = model_state(server, "chat")["pid"]
    events: list[str] = []
    with HealthWatch(server):
        body = {"model": "SmolLM2-135M-Instruct", "stream": True,
                "messages": [{"role": "user", "content": "Tell me a long story."}], **LONG}
        with httpx.stream("POST", f"{server}/v1/chat/completions", json=body,
                          timeout=60) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 5:
                        os.kill(pid, signal.SIGSEGV)
        wait_until_back(server, "chat", pid)
        after = chat(server, "Say hello.")
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "engine_restarting" and "SIGSEGV" in error["message"]
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"]


def test_embedding_worker_crash_is_a_503_then_embeddings_work(server):
    pid = model_state(server, "embedding")["pid"]
    inputs = [f"sentence number {i} about the weather" for i in range(2048)]
    with HealthWatch(server):
        killer = kill_soon(pid, signal.SIGSEGV, 0.3)
        crashed = httpx.post(f"{server}/v1/embeddings", json={"input": inputs}, timeout=120)
        killer.join()
        wait_until_back(server, "embedding", pid)
        after = httpx.post(f"{server}/v1/embeddings", json={"input": "hello"}, timeout=60)
    assert crashed.status_code == 503
    assert crashed.json()["error"]["code"] == "engine_restarting"
    vector = after.json()["data"][0]["embedding"]
    assert len(vector) == 384 and abs(sum(v * v for v in vector) - 1) < 1e-3


def test_speech_worker_crash_mid_stream_then_speech_works(server):
    pid = model_state(server, "speech")["pid"]
    text = " ".join(f"This is sentence number {i} of a long text." for i in range(30))
    received = 0
    with HealthWatch(server):
        # Raw audio has no room for an error: the server ends the response without its last
        # chunk, so the client sees an incomplete body instead of a short "complete" one.
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
                "POST", f"{server}/v1/audio/speech", timeout=60,
                json={"model": "tts-1", "voice": "alloy", "input": text,
                      "response_format": "pcm"}) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                if not received:
                    os.kill(pid, signal.SIGSEGV)
                received += len(chunk)
        wait_until_back(server, "speech", pid)
        after = httpx.post(f"{server}/v1/tts", json={"text": "Hello again."}, timeout=60)
    # 30 sentences are far more than the 3 s of 24 kHz 16-bit audio that arrived.
    assert 0 < received < 24000 * 2 * 3
    assert after.status_code == 200 and after.content[:4] == b"RIFF"


def test_a_stalled_worker_is_killed_after_the_stall_limit(server):
    pid = model_state(server, "chat")["pid"]
    with HealthWatch(server):
        stopper = kill_soon(pid, signal.SIGSTOP, 0.3)
        started = time.monotonic()
        stalled = chat(server, "Tell me a long story about mountains.", **LONG)
        waited = time.monotonic() - started
        stopper.join()
        wait_until_back(server, "chat", pid)
        after = chat(server, "Say hello.")
    assert stalled.status_code == 503
    error = stalled.json()["error"]
    assert error["code"] == "engine_restarting" and "no progress" in error["message"]
    assert STALL_SECONDS <= waited < STALL_SECONDS + 10
    assert after.status_code == 200


def test_the_same_request_crashing_the_worker_twice_is_refused(server):
    poison = "Write a poem about a crashing engine, please, at length."
    for crash in range(2):
        pid = model_state(server, "chat")["pid"]
        killer = kill_soon(pid, signal.SIGSEGV, 0.4)
        failed = chat(server, poison, **LONG)
        killer.join()
        wait_until_back(server, "chat", pid)
        assert failed.status_code == (503 if crash == 0 else 500), failed.text
    refused = chat(server, poison, **LONG)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "request_crashed_engine"
    assert chat(server, "Say hello.").status_code == 200
