"""``labs-api serve --ray`` on a real two-node Ray cluster (head and worker on loopback).

The same end-to-end checks as the single-process server (official openai client, streaming,
errors), then the Ray-only ones: replicas spread over the nodes, a client disconnect stops the
work in the chat replica, and a killed replica fails its requests in flight with 503 while Ray
replaces it, after which requests succeed again. Every wait has a deadline; the cluster is
stopped whatever happens (``ray_cluster`` stops exactly the processes it started).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.ray_cluster import labs_on_ray, ray_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="ray is not installed: pip install 'labs-api[ray]' "
                       "(scripts/test installs it)"),
]

CHAT = "SmolLM2-135M-Instruct"
EMBEDDING = "sentence-transformers/all-MiniLM-L6-v2"
APP = "labs-api"
# Two nodes of 2 logical CPUs: ingress 0.5 + chat 1 + 2 x embedding 0.5 + speech 0.5 = 3.
DEPLOY_ENV = {
    "LABS_RAY_INGRESS_NUM_CPUS": "0.5",
    "LABS_RAY_CHAT_REPLICAS": "1",
    "LABS_RAY_CHAT_NUM_CPUS": "1",
    "LABS_RAY_EMBEDDING_REPLICAS": "2",
    "LABS_RAY_EMBEDDING_NUM_CPUS": "0.5",
    "LABS_RAY_SPEECH_REPLICAS": "1",
    "LABS_RAY_SPEECH_NUM_CPUS": "0.5",
    "LABS_PARALLEL": "4",
    "LABS_N_CTX": "1024",
}
LONG_ANSWER = [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]
#: A generation that runs for seconds: 600 tokens, the end-of-text tokens banned.
LONG = {"model": CHAT, "messages": LONG_ANSWER, "max_tokens": 600,
        "logit_bias": {"0": -100, "2": -100}}


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not after {timeout_s} s (last: {last!r})")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with ray_cluster(nodes=2, cpus=2) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(cluster, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("ray") / "labs-api-serve-ray.log"
    with labs_on_ray(cluster.address, DEPLOY_ENV, log) as url:
        yield url


@pytest.fixture(scope="module")
def serve_handles(cluster) -> Iterator[Callable[[str], Any]]:
    """Handles to the model deployments, from this process as a second Ray driver (to ask
    replicas for their process ids and work in progress)."""
    import ray
    from ray import serve

    ray.init(address=cluster.address, logging_level="error", log_to_driver=False)
    try:
        yield lambda name: serve.get_deployment_handle(name, app_name=APP)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def client(base_url):
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0,
                         timeout=60)


def replicas(handle: Any, expected: int, timeout_s: float = 60) -> dict[int, dict]:
    """Each live replica's ``describe()``, by process id (calls go to random replicas, so
    ask until ``expected`` distinct ones answered)."""
    found: dict[int, dict] = {}

    def ask() -> bool:
        info = handle.describe.remote().result(timeout_s=30)
        if info["pid"] not in found and _alive(info["pid"]):
            found[info["pid"]] = info
        return len(found) >= expected

    wait_for(ask, timeout_s, f"{expected} replicas answering", interval_s=0.05)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sse_events(response: httpx.Response) -> Iterator[tuple[float, str]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield time.monotonic(), line[len("data: "):]


# ---- the single-process server's checks, through Ray ----------------------------------------


def test_the_single_process_server_never_imports_ray():
    code = ("import sys, labs_api.app, labs_api.cli, labs_api.catalog; "
            "print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "False"


def test_without_the_extra_the_message_names_it():
    code = ("import sys; sys.modules['ray'] = None; from labs_api.cli import main; "
            "main(['serve', '--ray'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "pip install 'labs-api[ray]'" in result.stderr, result.stderr


def test_engine_errors_cross_the_ray_boundary_unchanged():
    """What a replica raises is rebuilt in the ingress: class, message and attributes, even
    for exceptions that plain pickling cannot rebuild (extra ``__init__`` arguments)."""
    import pickle

    from labs_api.engines.embedding.base import InputTooLongError
    from labs_api.engines.embedding.batcher import BatcherOverloadedError
    from labs_api.errors import ContextLengthError, ServiceUnavailableError
    from labs_api.ray_serve.errors import ErrorReport, ReplicaError

    originals = [InputTooLongError(3, 600, 256), BatcherOverloadedError("full", retry_after=7),
                 ContextLengthError("too long", param="messages"),
                 ServiceUnavailableError("busy", retry_after=4, code="queue_timeout")]
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(originals[0]))  # why errors travel as reports
    for original in originals:
        sent = pickle.loads(pickle.dumps(ReplicaError(ErrorReport.of(original))))
        rebuilt = sent.report.rebuild()
        assert type(rebuilt) is type(original)
        assert str(rebuilt) == str(original)
        assert vars(rebuilt) == vars(original)
    unknown = ErrorReport("torch.fake", "OutOfMemoryError", ("no memory",), "no memory")
    assert type(unknown.rebuild()).__name__ == "OutOfMemoryError"


def test_ray_failures_become_503():
    import ray.exceptions
    import ray.serve.exceptions

    from labs_api.errors import EngineError, ServiceUnavailableError
    from labs_api.ray_serve.errors import from_ray

    died = from_ray(ray.exceptions.ActorDiedError(), "chat")
    assert isinstance(died, ServiceUnavailableError) and died.code == "replica_unavailable"
    assert died.headers["Retry-After"]
    full = from_ray(ray.serve.exceptions.BackPressureError(num_queued_requests=9,
                                                          max_queued_requests=8), "chat")
    assert isinstance(full, ServiceUnavailableError) and full.code == "server_overloaded"
    crashed = from_ray(ray.exceptions.RayTaskError("f", "tb", ValueError("bad")), "speech")
    assert isinstance(crashed, EngineError) and "ValueError: bad" in crashed.message


def test_a_model_that_failed_to_load_in_its_replica_fails_in_the_ingress_as_in_one_process():
    """The ingress's registry marks it failed with the replica's exception, as the
    single-process registry does with its own."""
    import asyncio

    from labs_api.errors import EngineError
    from labs_api.ray_serve.errors import ErrorReport
    from labs_api.ray_serve.proxies import proxy_registry
    from labs_api.settings import Settings

    class Answer:
        def __init__(self, value):
            self.value = value

        def result(self, timeout_s=None):
            return self.value

    class FakeHandle:
        def __init__(self, info):
            self.describe = type("M", (), {"remote": lambda _: Answer(info)})()

        def options(self, **_):
            return self

    missing = FileNotFoundError("LABS_MODEL names a GGUF file that does not exist: /x.gguf")
    settings = Settings(model="/x.gguf")
    infos = {settings.model: {"model_id": settings.model, "error": ErrorReport.of(missing),
                              "attributes": {}},
             settings.embedding_model: {"model_id": settings.embedding_model, "error": None,
                                        "attributes": {"dimensions": 384}},
             settings.tts_model: {"model_id": settings.tts_model, "error": None,
                                  "attributes": {"voices": ("joe",), "sample_rate": 22050}}}
    registry = proxy_registry(settings, {k: FakeHandle(v) for k, v in infos.items()})
    asyncio.run(registry.load_all())
    chat, embedding, speech = registry.slots
    assert chat.state == "failed"
    assert chat.error == f"FileNotFoundError: {missing}"
    with pytest.raises(EngineError, match="failed to load: FileNotFoundError"):
        asyncio.run(registry.engine("chat"))
    assert embedding.state == speech.state == "ready"
    assert asyncio.run(registry.engine("embedding")).dimensions == 384
    registry.close()


def test_settings_become_deployment_options():
    from labs_api.ray_serve.launcher import build_application
    from labs_api.ray_serve.options import check, model_options
    from labs_api.settings import Settings

    settings = Settings(ray_chat_max_replicas=4, ray_chat_num_gpus=0.5, parallel=6,
                        max_queue=10, ray_embedding_replicas=3)
    chat = model_options(settings, "chat")
    assert chat["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 1,
                                          "max_replicas": 4, "target_ongoing_requests": 6.0}
    assert "num_replicas" not in chat
    assert chat["max_ongoing_requests"] == 16
    assert chat["ray_actor_options"]["num_gpus"] == 0.5
    assert model_options(settings, "embedding")["num_replicas"] == 3
    build_application(settings)  # Ray Serve accepts every option
    with pytest.raises(SystemExit, match="LABS_RAY_SPEECH_MAX_REPLICAS=2"):
        check(Settings(ray_speech_replicas=3, ray_speech_max_replicas=2))


def test_models_and_readiness(base_url):
    models = httpx.get(f"{base_url}/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in models][:2] == [CHAT, EMBEDDING]
    ready = httpx.get(f"{base_url}/ready", timeout=30)
    assert ready.status_code == 200
    assert {m["state"] for m in ready.json()["models"]} == {"ready"}
    assert httpx.get(f"{base_url}/health", timeout=30).json() == {"status": "ok"}


def test_chat_with_the_openai_client(client):
    completion = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16,
        temperature=0, seed=1)
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 5
    assert 0 < completion.usage.completion_tokens <= 16


def test_chat_streams_tokens_as_they_are_generated(client):
    stream = client.chat.completions.create(
        model=CHAT, messages=LONG_ANSWER, max_tokens=48, temperature=0, stream=True,
        stream_options={"include_usage": True}, logit_bias=LONG["logit_bias"])
    arrivals, pieces, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                arrivals.append(time.monotonic())
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 48
    assert len(pieces) >= 20
    # Chunks arrive spread over the generation, not all at once at the end.
    assert arrivals[-1] - arrivals[0] > 0.1, arrivals


def test_legacy_completions_count_prompt_tokens_tokenized_in_the_replica(client):
    text = client.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=8,
                                     temperature=0)
    tokens = client.completions.create(model=CHAT, prompt=[[1, 2, 3, 4, 5]], max_tokens=4)
    assert text.choices[0].text and text.usage.completion_tokens == 8
    assert 3 <= text.usage.prompt_tokens <= 8  # four words, maybe a BOS
    assert tokens.usage.prompt_tokens == 5


def test_chat_errors_keep_their_status_and_body(base_url):
    url = f"{base_url}/v1/chat/completions"
    unknown = httpx.post(url, json={"model": "nope", "messages": LONG_ANSWER}, timeout=60)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    invalid = httpx.post(url, json={"model": CHAT, "messages": LONG_ANSWER, "temperature": 5},
                         timeout=60)
    assert invalid.status_code == 422
    assert invalid.json()["error"]["param"] == "temperature"
    # Raised by the engine in the chat replica, and reaching the client as in one process:
    too_long = [{"role": "user", "content": "word " * 5000}]  # > 4 slots x 1024, shared
    for stream in (False, True):
        response = httpx.post(url, json={"model": CHAT, "messages": too_long, "stream": stream},
                              timeout=60)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "messages"


def test_embeddings_with_the_openai_client(client, base_url):
    texts = [f"sentence number {i}" for i in range(40)]
    result = client.embeddings.create(model=EMBEDDING, input=texts)
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (40, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert result.usage.prompt_tokens > 40
    raw = httpx.post(f"{base_url}/v1/embeddings", json={"input": texts[:2],
                     "encoding_format": "base64", "dimensions": 64}, timeout=60).json()
    first = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert first.shape == (64,)
    similar = httpx.post(f"{base_url}/v1/similarities",
                         json={"sentences": ["A cat sleeps.", "A kitten naps.", "Tax law."]},
                         timeout=60).json()["similarities"]
    assert similar[0][1] > similar[0][2]
    too_long = httpx.post(f"{base_url}/v1/embeddings", json={"input": ["ok", "word " * 600]},
                          timeout=60)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "input[1]"
    assert too_long.json()["error"]["code"] == "context_length_exceeded"


def test_speech_streams_audio_sentence_by_sentence(client, base_url):
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.",
                                       response_format="wav")
    assert audio.content[:4] == b"RIFF"
    text = " ".join(f"This is sentence number {i}." for i in range(6))
    arrivals = []
    with httpx.stream("POST", f"{base_url}/v1/audio/speech", timeout=120,
                      json={"model": "tts-1", "input": text, "voice": "alloy",
                            "response_format": "pcm"}) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            arrivals.append((time.monotonic(), len(chunk)))
    assert sum(n for _, n in arrivals) > 6 * 10_000
    assert arrivals[-1][0] - arrivals[0][0] > 0.05  # not one block at the end
    wav = httpx.post(f"{base_url}/v1/tts", json={"text": "One. Two."}, timeout=120)
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
    bad = httpx.post(f"{base_url}/v1/audio/speech", timeout=60,
                     json={"model": "tts-1", "input": "Hi.", "voice": "nobody"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "voice"


# ---- what only Ray does -----------------------------------------------------------------------


def test_replicas_spread_over_both_nodes(base_url, serve_handles):
    embedding = replicas(serve_handles("Embedding"), expected=2)
    chat = replicas(serve_handles("Chat"), expected=1)
    speech = replicas(serve_handles("Speech"), expected=1)
    everything = [*embedding.values(), *chat.values(), *speech.values()]
    assert all(info["error"] is None for info in everything)
    assert len({info["node_id"] for info in everything}) == 2


def test_models_are_loaded_in_their_replicas_not_in_the_ingress(base_url, serve_handles):
    """The process of each replica maps its model's libraries; the ingress's maps none."""
    libraries = {"Chat": "libllama", "Embedding": "libtorch_cpu", "Ingress": None}
    for deployment, library in libraries.items():
        pids = _processes_titled(f"ray::ServeReplica:{APP}:{deployment}")
        assert pids, deployment
        for pid in pids:
            maps = Path(f"/proc/{pid}/maps").read_text()
            if library is None:
                assert "libllama" not in maps and "libtorch_cpu" not in maps
            else:
                assert library in maps, deployment


def _processes_titled(title: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[0].decode(errors="replace").startswith(title):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_disconnect_stops_the_generation_in_the_replica(base_url, serve_handles):
    chat = serve_handles("Chat")
    body = {**LONG, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as r:
        events = sse_events(r)
        for _ in range(4):
            next(events)
        assert chat.describe.remote().result(timeout_s=30)["active"] == 1
    # 600 tokens take seconds; the replica's stream closes as soon as the client left.
    wait_for(lambda: chat.describe.remote().result(timeout_s=30)["active"] == 0, 10,
             "the chat replica stops generating")


def test_a_disconnect_stops_a_non_streaming_request_too(base_url, serve_handles):
    chat = serve_handles("Chat")
    host, port = base_url.removeprefix("http://").split(":")
    body = json.dumps(LONG).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_for(lambda: chat.describe.remote().result(timeout_s=30)["active"] == 1, 30,
                 "the request is being generated")
    wait_for(lambda: chat.describe.remote().result(timeout_s=30)["active"] == 0, 10,
             "the chat replica stops generating")


def test_a_killed_chat_replica_fails_its_streams_with_503_then_is_replaced(
        base_url, serve_handles):
    chat = serve_handles("Chat")
    (pid,) = replicas(chat, expected=1)
    body = {**LONG, "stream": True}
    events: list[str] = []
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        for _, data in sse_events(r):
            events.append(data)
            if len(events) == 3:  # generating: kill the replica's process
                os.kill(pid, signal.SIGKILL)
    assert len(events) < 100  # it did not run to the end
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "replica_unavailable"
    chat_recovers(base_url)
    assert pid not in replicas(chat, expected=1)


def test_a_killed_chat_replica_fails_its_requests_with_503(base_url, serve_handles):
    chat = serve_handles("Chat")
    (pid,) = replicas(chat, expected=1, timeout_s=120)
    body = LONG
    result: dict[str, httpx.Response] = {}
    request = threading.Thread(target=lambda: result.update(response=httpx.post(
        f"{base_url}/v1/chat/completions", json=body, timeout=120)))
    request.start()
    wait_for(lambda: chat.describe.remote().result(timeout_s=30)["active"] == 1, 30,
             "the request is being generated")
    os.kill(pid, signal.SIGKILL)
    request.join(timeout=60)
    response = result["response"]
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "replica_unavailable"
    assert response.headers["retry-after"]
    chat_recovers(base_url)


def test_a_killed_embedding_replica_is_replaced_and_requests_succeed(base_url, serve_handles):
    handle = serve_handles("Embedding")
    before = replicas(handle, expected=2)
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    statuses: list[int] = []

    def all_succeed() -> bool:
        batch = [httpx.post(f"{base_url}/v1/embeddings",
                            json={"model": EMBEDDING, "input": [f"text {i}"]}, timeout=60)
                 for i in range(8)]
        statuses.extend(r.status_code for r in batch)
        assert {r.status_code for r in batch} <= {200, 503}, [r.text for r in batch]
        return all(r.status_code == 200 for r in batch)

    wait_for(all_succeed, 90, "embedding requests succeed again", interval_s=0.5)
    after = replicas(handle, expected=2, timeout_s=120)
    assert victim not in after
    assert len(set(after) - set(before)) == 1  # Ray started a replacement


def chat_recovers(base_url: str, timeout_s: float = 120) -> None:
    def ok() -> bool:
        response = httpx.post(f"{base_url}/v1/chat/completions", timeout=60, json={
            "model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200

    wait_for(ok, timeout_s, "chat requests succeed again", interval_s=1)
