"""Many models in one real server, from a models file: the bundled GGUF under three chat ids,
the bundled embedding and speech models, and an entry whose weights are missing. Loading on
demand, keep_alive 0, the idle timeout, LRU eviction at LABS_MAX_LOADED_MODELS=2, concurrent
first requests, a failed load, aliases through the official client, the management endpoints
with and without the key, and the metadata of every kind. The tests run in order and share the
server (each states what it starts from)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from labs_api.proc_memory import tree_rss_bytes
from tests.e2e.server import running_server
from tests.openai_schema import assert_matches_openai

pytestmark = pytest.mark.slow

KEY = "models-file-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINYLLAMA = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
MODELS = f"""
[[models]]
id = "chat-a"
kind = "chat"
source = "SmolLM2-135M-Instruct"
aliases = ["{TINYLLAMA}", "gpt-4o-mini"]
context_size = 1024
parallel = 2

[[models]]
id = "chat-b"
kind = "chat"
context_size = 512
parallel = 2

[[models]]
id = "chat-c"
kind = "chat"
context_size = 512
parallel = 2

[[models]]
id = "broken"
kind = "chat"
source = "missing-weights.gguf"

[[models]]
id = "minilm"
kind = "embedding"
aliases = ["text-embedding-3-small"]
preload = true

[[models]]
id = "joe"
kind = "speech"
keep_alive = "2s"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("models-file")
    (folder / "models.toml").write_text(MODELS, encoding="utf-8")
    env = {"LABS_MODELS_FILE": str(folder / "models.toml"), "LABS_MAX_LOADED_MODELS": "2",
           "LABS_PRELOAD_ON_START": "false", "LABS_API_KEY": KEY, "LABS_QUEUE_TIMEOUT": "20"}
    with running_server(env, log_path=folder / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def status(server: str) -> dict[str, dict]:
    body = httpx.get(f"{server}/v1/status", headers=AUTH, timeout=10).json()
    return {row["id"]: row for row in body["data"]}


def loaded(server: str) -> set[str]:
    return {i for i, row in status(server).items() if row["state"] == "loaded"}


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def say(client: openai.OpenAI, model: str, **extra) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8,
        temperature=0, extra_body=extra or None)
    assert answer.choices[0].message.content
    return answer.model


def test_only_the_preloaded_model_is_loaded_at_start(server):
    ready = httpx.get(f"{server}/ready").json()
    assert ready["status"] == "ready"
    assert {m["id"]: m["preload"] for m in ready["models"]}["minilm"] is True
    assert loaded(server) == {"minilm"}
    rows = status(server)
    assert rows["chat-a"]["state"] == "unloaded" and rows["chat-a"]["pid"] is None
    assert rows["minilm"]["memory_bytes"] > 50_000_000


def test_metadata_of_unloaded_models_and_aliases(server, client):
    body = httpx.get(f"{server}/v1/models", headers=AUTH).json()
    assert_matches_openai(body, "ListModelsResponse")
    cards = {c["id"]: c for c in body["data"]}
    # The file has no transcription entry: the default one stays.
    assert set(cards) == {"chat-a", TINYLLAMA, "gpt-4o-mini", "chat-b", "chat-c", "broken",
                          "minilm", "text-embedding-3-small", "joe", "whisper-tiny.en"}
    assert cards["chat-a"]["aliases"] == [TINYLLAMA, "gpt-4o-mini"]
    assert cards[TINYLLAMA]["alias_of"] == "chat-a"
    assert cards["chat-a"]["context_length"] == 1024 and cards["chat-b"]["context_length"] == 512
    assert {"chat", "tools", "json_schema", "logprobs"} <= set(cards["chat-a"]["capabilities"])
    assert cards["chat-a"]["status"] == "unloaded" and cards["minilm"]["status"] == "loaded"
    assert cards["minilm"]["kind"] == "embedding" and cards["minilm"]["dimensions"] == 384
    assert cards["minilm"]["context_length"] == 256
    assert cards["joe"]["kind"] == "speech" and "voices" in cards["joe"]["capabilities"]
    assert cards["whisper-tiny.en"]["kind"] == "transcription"
    listed = {m.id: m for m in client.models.list().data}
    assert listed[TINYLLAMA].model_extra["alias_of"] == "chat-a"


def test_a_request_loads_its_model_and_the_alias_names_the_response(server, client):
    assert say(client, TINYLLAMA) == TINYLLAMA
    rows = status(server)
    assert rows["chat-a"]["state"] == "loaded" and alive(rows["chat-a"]["pid"])
    assert rows["chat-a"]["memory_bytes"] > 50_000_000 and rows["chat-a"]["loaded_since"]
    assert loaded(server) == {"minilm", "chat-a"}


def test_the_least_recently_used_idle_model_is_evicted_and_its_memory_returned(server, client):
    rows = status(server)
    evicted_pid = rows["minilm"]["pid"]
    assert tree_rss_bytes(evicted_pid) > 50_000_000
    assert say(client, "chat-b") == "chat-b"  # minilm was used longest ago
    assert loaded(server) == {"chat-a", "chat-b"}
    wait_for(lambda: not alive(evicted_pid))
    assert tree_rss_bytes(evicted_pid) == 0
    metrics = httpx.get(f"{server}/metrics").text
    assert 'labs_model_state_changes_total{kind="embedding",model="minilm",state="unloaded"}' \
        ' 1.0' in metrics


def test_concurrent_first_requests_load_once(server, client):
    answers: list[str] = []

    def ask() -> None:
        answers.append(say(client, "chat-c"))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == ["chat-c"] * 3
    metrics = httpx.get(f"{server}/metrics").text
    assert 'labs_model_state_changes_total{kind="chat",model="chat-c",state="loading"} 1.0' \
        in metrics
    assert loaded(server) == {"chat-b", "chat-c"}  # chat-a was the least recently used


def test_keep_alive_zero_unloads_after_the_request(server, client):
    result = client.embeddings.create(model="text-embedding-3-small", input=["hello"],
                                      extra_body={"keep_alive": 0})
    assert result.model == "text-embedding-3-small" and len(result.data[0].embedding) == 384
    wait_for(lambda: status(server)["minilm"]["state"] == "unloaded")


def test_an_idle_model_unloads_after_its_keep_alive(server, client):
    with client.audio.speech.with_streaming_response.create(
            model="joe", voice="alloy", input="Hello there.", response_format="wav") as audio:
        assert len(audio.read()) > 1000
    seen: list[dict] = []

    def unloaded() -> bool:
        seen.append(status(server)["joe"])
        return seen[-1]["state"] == "unloaded"

    wait_for(unloaded)
    # While it waited to expire (the entry's keep_alive is 2 s), the view said when.
    idle = [row for row in seen if row["state"] == "loaded" and row["expires_at"] is not None]
    assert idle and idle[0]["keep_alive"] == 2
    assert idle[0]["expires_at"] - idle[0]["last_used"] in (1, 2, 3)  # whole seconds
    wait_for(lambda: not alive(idle[0]["pid"]))


def test_a_model_that_fails_to_load_leaves_the_others_working(server, client):
    with pytest.raises(openai.InternalServerError) as failed:
        say(client, "broken")
    assert "missing-weights.gguf" in str(failed.value)
    rows = status(server)
    assert rows["broken"]["state"] == "failed" and rows["broken"]["pid"] is None
    assert say(client, "chat-b") == "chat-b"
    assert httpx.get(f"{server}/ready").status_code == 200  # it is not preloaded


def test_management_endpoints_need_the_key(server):
    for method, path in [("GET", "/v1/status"), ("POST", "/v1/models/chat-a/load"),
                         ("POST", "/v1/models/chat-a/unload")]:
        refused = httpx.request(method, f"{server}{path}")
        assert refused.status_code == 401, path


def test_load_and_unload_by_hand(server):
    before = loaded(server)
    response = httpx.post(f"{server}/v1/models/whisper-tiny.en/load", headers=AUTH, timeout=120)
    assert response.status_code == 200 and response.json()["state"] == "loaded"
    assert len(loaded(server)) == 2 and "whisper-tiny.en" in loaded(server)
    card = httpx.get(f"{server}/v1/models/whisper-tiny.en", headers=AUTH).json()
    assert_matches_openai(card, "Model")
    assert card["status"] == "loaded" and "transcription" in card["capabilities"]
    pid = status(server)["whisper-tiny.en"]["pid"]
    response = httpx.post(f"{server}/v1/models/whisper-tiny.en/unload", headers=AUTH)
    assert response.status_code == 200 and response.json()["state"] == "unloaded"
    wait_for(lambda: not alive(pid))
    assert "whisper-tiny.en" not in loaded(server) and len(before) == 2
    missing = httpx.post(f"{server}/v1/models/nope/load", headers=AUTH)
    assert missing.status_code == 404


def test_speech_metadata_once_loaded(server):
    response = httpx.post(f"{server}/v1/models/joe/load", headers=AUTH, timeout=120)
    assert response.status_code == 200
    card = httpx.get(f"{server}/v1/models/joe", headers=AUTH).json()
    assert card["voices"] == ["en_US-joe-medium"] and card["status"] == "loaded"


def test_the_memory_cap_counts_measured_worker_memory(tmp_path):
    """With a 1 MB cap each chat model alone exceeds it: it still loads (nothing could be
    unloaded for it), and the next one unloads it, by its measured RSS."""
    (tmp_path / "models.toml").write_text(
        '[[models]]\nid = "m1"\nkind = "chat"\n\n[[models]]\nid = "m2"\nkind = "chat"\n')
    env = {"LABS_MODELS_FILE": str(tmp_path / "models.toml"), "LABS_PRELOAD_ON_START": "false",
           "LABS_MAX_MODEL_MEMORY": "1MB"}
    with running_server(env, log_path=tmp_path / "server.log") as url:
        ask = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        assert say(ask, "m1") == "m1"
        first = httpx.get(f"{url}/v1/status").json()
        assert first["max_model_memory"] == 1_000_000
        row = {r["id"]: r for r in first["data"]}["m1"]
        assert row["state"] == "loaded" and row["memory_bytes"] > 50_000_000
        assert say(ask, "m2") == "m2"
        rows = {r["id"]: r for r in httpx.get(f"{url}/v1/status").json()["data"]}
        assert rows["m1"]["state"] == "unloaded" and rows["m2"]["state"] == "loaded"
        assert rows["m1"]["memory_bytes"] > 50_000_000  # what it took, remembered
        assert not alive(row["pid"])
