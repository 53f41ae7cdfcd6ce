"""Loading on demand, keep_alive, idle unloading, eviction and the management endpoints, over
HTTP on fake chat engines in this process (the real engines: tests/e2e/test_models_file.py)."""

from __future__ import annotations

import asyncio
import collections
import threading
import time

import httpx
import openai
import pytest

from labs_api.app import create_app
from labs_api.models import LoadLimits, ModelRegistry, ModelSlot
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine

LOADS: collections.Counter[str] = collections.Counter()


class HeldEngine(FakeChatEngine):
    """A fake whose generations wait for ``release`` (an asyncio.Event set by the test)."""

    release: asyncio.Event | None = None

    async def _run(self, prompt_tokens, params):  # type: ignore[override]
        if self.release is not None:
            await self.release.wait()
        async for chunk in super()._run(prompt_tokens, params):
            yield chunk


def loader(model_id: str, fail: bool = False, hold: threading.Event | None = None):
    def load() -> FakeChatEngine:
        if hold is not None:
            assert hold.wait(timeout=30)
        LOADS[model_id] += 1
        if fail:
            raise FileNotFoundError(f"no weights for {model_id}")
        return HeldEngine(model_id, reply="one two three")
    return load


def registry(*ids: str, limits: LoadLimits | None = None, keep_alive: float = -1,
             aliases: dict[str, tuple[str, ...]] | None = None, fail: str = "",
             hold: threading.Event | None = None) -> ModelRegistry:
    slots = [ModelSlot(model_id=i, kind="chat", load=loader(i, i == fail, hold),
                       keep_alive=keep_alive, aliases=(aliases or {}).get(i, ()),
                       capabilities=("chat", "streaming"), context_length=512)
             for i in ids]
    return ModelRegistry(slots, limits=limits)


def chat(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def states(client_json: dict) -> dict[str, str]:
    return {m["id"]: m["state"] for m in client_json["data"]}


@pytest.fixture(autouse=True)
def _reset_loads():
    LOADS.clear()


def run(scenario):
    """Run ``scenario(client, app)`` on one event loop; requests as tasks of their own (each
    request's task is what holds a model, as under uvicorn)."""
    async def main(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            try:
                return await scenario(client, app)
            finally:
                await app.state.registry.aclose()
    return lambda app: asyncio.run(main(app))


def app_for(reg: ModelRegistry, **settings):
    return create_app(Settings(preload_on_start=False, **settings), reg)


async def post(client, path, body=None, **kw):
    return await asyncio.create_task(client.post(path, json=body, **kw))


async def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_models_load_on_first_request_and_not_before():
    async def scenario(client, app):
        status = (await client.get("/v1/status")).json()
        assert states(status) == {"a": "unloaded", "b": "unloaded"}
        assert (await client.get("/ready")).status_code == 200  # nothing is preloaded
        response = await post(client, "/v1/chat/completions", chat("a"))
        assert response.status_code == 200 and response.json()["model"] == "a"
        status = (await client.get("/v1/status")).json()
        assert states(status) == {"a": "loaded", "b": "unloaded"}
        row = status["data"][0]
        assert row["loaded_since"] is not None and row["expires_at"] is None  # -1: kept
        assert row["requests_running"] == 0 and row["keep_alive"] == -1
        assert dict(LOADS) == {"a": 1}
    run(scenario)(app_for(registry("a", "b")))


def test_concurrent_first_requests_load_once():
    hold = threading.Event()

    async def scenario(client, app):
        first = [asyncio.create_task(client.post("/v1/chat/completions", json=chat("a")))
                 for _ in range(5)]
        await wait_until(lambda: _row(client, "a", state="loading", requests_waiting=5))
        hold.set()
        answers = await asyncio.gather(*first)
        assert [r.status_code for r in answers] == [200] * 5
        assert LOADS["a"] == 1
        metrics = (await client.get("/metrics")).text
        assert 'labs_model_state_changes_total{kind="chat",model="a",state="loading"} 1.0' \
            in metrics
        assert 'labs_model_state_changes_total{kind="chat",model="a",state="loaded"} 1.0' \
            in metrics
    run(scenario)(app_for(registry("a", hold=hold)))


async def _row(client, model_id: str, **expected) -> bool:
    rows = (await client.get("/v1/status")).json()["data"]
    row = next(r for r in rows if r["id"] == model_id)
    return all(row[k] == v for k, v in expected.items())


async def _is(client, model_id: str, state: str) -> bool:
    rows = (await client.get("/v1/status")).json()["data"]
    return any(r["id"] == model_id and r["state"] == state for r in rows)


def test_keep_alive_zero_unloads_after_the_request():
    async def scenario(client, app):
        response = await post(client, "/v1/chat/completions", chat("a", keep_alive=0))
        assert response.status_code == 200
        await wait_until(lambda: _is(client, "a", "unloaded"))
        slot = app.state.registry.find("a")
        assert slot.engine is None and slot.loaded_once
        # The next request loads it again; /ready stays 200 (nothing preloaded).
        assert (await post(client, "/v1/chat/completions", chat("a"))).status_code == 200
        assert LOADS["a"] == 2
    run(scenario)(app_for(registry("a")))


def test_an_idle_model_unloads_after_its_keep_alive():
    async def scenario(client, app):
        await post(client, "/v1/chat/completions", chat("a", keep_alive="200ms"))
        row = (await client.get("/v1/status")).json()["data"][0]
        assert row["keep_alive"] == 0.2
        assert row["state"] in ("loaded", "unloaded")  # it may already be gone
        await wait_until(lambda: _is(client, "a", "unloaded"))
        # The entry's own keep_alive (-1) again for a request that does not say.
        await post(client, "/v1/chat/completions", chat("a"))
        await asyncio.sleep(0.4)
        assert await _is(client, "a", "loaded")
    run(scenario)(app_for(registry("a")))


def test_a_model_in_use_is_not_unloaded_until_its_stream_ends():
    async def scenario(client, app):
        HeldEngine.release = asyncio.Event()
        try:
            stream = asyncio.create_task(client.post(
                "/v1/chat/completions", json=chat("a", stream=True, keep_alive=0)))
            await wait_until(lambda: _row(client, "a", requests_running=1))
            row = (await client.get("/v1/status")).json()["data"][0]
            assert row["state"] == "loaded" and row["expires_at"] is None
            await asyncio.sleep(0.1)
            assert await _is(client, "a", "loaded")
            HeldEngine.release.set()
            assert "[DONE]" in (await stream).text
            await wait_until(lambda: _is(client, "a", "unloaded"))
        finally:
            HeldEngine.release = None
    run(scenario)(app_for(registry("a")))


def test_least_recently_used_idle_model_is_evicted_at_max_loaded():
    async def scenario(client, app):
        for model in ("a", "b", "a"):
            assert (await post(client, "/v1/chat/completions", chat(model))).status_code == 200
        assert (await post(client, "/v1/chat/completions", chat("c"))).status_code == 200
        status = (await client.get("/v1/status")).json()
        assert states(status) == {"a": "loaded", "b": "unloaded", "c": "loaded"}
        assert status["loaded_models"] == 2 and status["max_loaded_models"] == 2
    run(scenario)(app_for(registry("a", "b", "c", limits=LoadLimits(max_loaded=2))))


def test_when_nothing_is_idle_the_request_waits_then_gets_503():
    async def scenario(client, app):
        HeldEngine.release = asyncio.Event()
        try:
            busy = asyncio.create_task(client.post("/v1/chat/completions", json=chat("a")))
            await wait_until(lambda: _is(client, "a", "loaded"))
            refused = await post(client, "/v1/chat/completions", chat("b"))
            assert refused.status_code == 503 and "retry-after" in refused.headers
            error = refused.json()["error"]
            assert error["code"] == "model_capacity"
            assert "LABS_MAX_LOADED_MODELS=1" in error["message"] and "'a'" in error["message"]
            assert await _is(client, "b", "unloaded")
            # Once the busy request ends, b gets in (a is evicted).
            waiting = asyncio.create_task(client.post("/v1/chat/completions", json=chat("b")))
            await asyncio.sleep(0.05)
            HeldEngine.release.set()
            assert (await busy).status_code == 200
            assert (await waiting).status_code == 200
            assert states((await client.get("/v1/status")).json()) == {
                "a": "unloaded", "b": "loaded"}
        finally:
            HeldEngine.release = None
    run(scenario)(app_for(registry("a", "b", limits=LoadLimits(max_loaded=1, wait_s=0.3))))


def test_a_model_that_fails_to_load_leaves_the_others_working():
    async def scenario(client, app):
        broken = await post(client, "/v1/chat/completions", chat("bad"))
        assert broken.status_code == 500
        assert "no weights for bad" in broken.json()["error"]["message"]
        assert (await post(client, "/v1/chat/completions", chat("a"))).status_code == 200
        status = (await client.get("/v1/status")).json()
        assert states(status) == {"a": "loaded", "bad": "failed"}
        assert "FileNotFoundError" in status["data"][1]["error"]
        cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
        assert cards["bad"]["status"] == "failed"
        # /load tries again (and fails again, saying why).
        again = await post(client, "/v1/models/bad/load")
        assert again.status_code == 500 and LOADS["bad"] == 2
        # /unload clears the failure: the next request tries to load it again.
        cleared = await post(client, "/v1/models/bad/unload")
        assert cleared.json()["state"] == "unloaded" and cleared.json()["error"] is None
        assert (await post(client, "/v1/chat/completions", chat("bad"))).status_code == 500
        assert LOADS["bad"] == 3
    run(scenario)(app_for(registry("a", "bad", fail="bad")))


def test_management_endpoints():
    async def scenario(client, app):
        loaded = await post(client, "/v1/models/org/a-model/load")
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["state"] == "loaded" and loaded.json()["id"] == "org/a-model"
        assert LOADS["org/a-model"] == 1
        assert (await post(client, "/v1/models/alias-a/load")).json()["state"] == "loaded"
        assert LOADS["org/a-model"] == 1  # loaded already
        unloaded = await post(client, "/v1/models/org/a-model/unload")
        assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"
        missing = await post(client, "/v1/models/nope/load")
        assert missing.status_code == 404 and "'org/a-model'" in missing.json()["error"]["message"]
        assert (await client.get("/v1/models/org/a-model")).json()["status"] == "unloaded"
    run(scenario)(app_for(registry("org/a-model", aliases={"org/a-model": ("alias-a",)})))


def test_management_endpoints_need_the_key_when_keys_are_set():
    async def scenario(client, app):
        for method, path in [("GET", "/v1/status"), ("POST", "/v1/models/a/load"),
                             ("POST", "/v1/models/a/unload")]:
            refused = await client.request(method, path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key"
            allowed = await client.request(method, path, headers={"Authorization": "Bearer k"})
            assert allowed.status_code == 200, path
        assert LOADS["a"] == 1
    run(scenario)(app_for(registry("a"), api_key="k"))


def test_aliases_are_listed_and_answer_under_their_own_name():
    async def scenario(client, app):
        cards = (await client.get("/v1/models")).json()["data"]
        assert [c["id"] for c in cards] == ["a", "gpt-4o-mini"]
        assert cards[0]["aliases"] == ["gpt-4o-mini"] and "alias_of" not in cards[0]
        assert cards[1]["alias_of"] == "a" and "aliases" not in cards[1]
        for card in cards:
            assert card["object"] == "model" and card["kind"] == "chat"
            assert card["context_length"] == 512 and card["status"] == "unloaded"
        answer = await post(client, "/v1/chat/completions", chat("gpt-4o-mini"))
        assert answer.json()["model"] == "gpt-4o-mini"
        legacy = await post(client, "/v1/completions", {"model": "gpt-4o-mini", "prompt": "x"})
        assert legacy.json()["model"] == "gpt-4o-mini"
        assert LOADS["a"] == 1
        # The official client parses the list with our extra fields.
        oa = openai.AsyncOpenAI(base_url="http://t/v1", api_key="x", http_client=client)
        listed = await oa.models.list()
        assert [m.id for m in listed.data] == ["a", "gpt-4o-mini"]
        assert listed.data[1].model_extra["alias_of"] == "a"
    run(scenario)(app_for(registry("a", aliases={"a": ("gpt-4o-mini",)})))


@pytest.mark.parametrize("value", [-2, "1d", "x" * 100, True, [1], {"s": 1}, 1e12])
def test_a_bad_keep_alive_is_a_422_naming_it(value):
    async def scenario(client, app):
        response = await post(client, "/v1/chat/completions", chat("a", keep_alive=value))
        assert response.status_code == 422
        assert "keep_alive" in response.json()["error"]["message"]
        assert LOADS["a"] == 0
    run(scenario)(app_for(registry("a")))


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", {"model": "a", "prompt": "x"}),
    ("/v1/embeddings", {"input": "x"}),
    ("/v1/similarities", {"sentences": ["x"]}),
    ("/v1/tts", {"text": "x"}),
    ("/v1/audio/speech", {"model": "tts-1", "input": "x", "voice": "alloy"}),
])
def test_every_endpoint_with_keep_alive_checks_it(path, body):
    async def scenario(client, app):
        response = await post(client, path, {**body, "keep_alive": "forever"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert "keep_alive" in error["message"]
    run(scenario)(app_for(registry("a")))


def test_the_memory_cap_evicts_least_recently_used_models():
    def with_hints(reg: ModelRegistry) -> ModelRegistry:
        for slot in reg.slots:
            slot.memory_hint = 600
        return reg

    async def scenario(client, app):
        for model in ("a", "b"):
            assert (await post(client, "/v1/chat/completions", chat(model))).status_code == 200
        status = (await client.get("/v1/status")).json()
        assert states(status) == {"a": "unloaded", "b": "loaded"}
        assert status["max_model_memory"] == 1000 and status["memory_bytes"] == 600
    run(scenario)(app_for(with_hints(registry("a", "b", limits=LoadLimits(max_memory=1000)))))
