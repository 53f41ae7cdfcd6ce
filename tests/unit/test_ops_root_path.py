"""API keys and the rate limit apply to the route a request reaches, whatever the root path or
prefix it arrives with; probes and docs stay open."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from labs_api.app import create_app
from labs_api.ops.security import route_path
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with

KEY = "sk-root-path"


def get(root_path: str, path: str, key: str | None = None, **settings) -> httpx.Response:
    app = create_app(Settings(api_key=KEY, preload_on_start=False, **settings),
                     registry_with(FakeChatEngine("fake-chat")))

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(run())


@pytest.mark.parametrize(("root_path", "path"), [
    ("/api", "/api/v1/models"),   # uvicorn --root-path /api: path includes the root path
    ("/api", "/v1/models"),       # a server that does not prepend it
    ("", "/v1/models"),
])
def test_a_v1_route_needs_the_key_under_any_root_path(root_path, path):
    refused = get(root_path, path)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "invalid_api_key"
    allowed = get(root_path, path, KEY)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["data"][0]["id"] == "fake-chat"


@pytest.mark.parametrize("path", ["/api/api/v1/models", "//v1/models", "/V1/models", "/nope"])
def test_unknown_paths_fail_closed(path):
    assert get("/api", path).status_code == 401
    assert get("/api", path, KEY).status_code in (404, 405)


@pytest.mark.parametrize("path", ["/api/health", "/api/ready", "/api/openapi.json"])
def test_probes_and_docs_stay_open_under_the_root_path(path):
    response = get("/api", path)
    assert response.status_code in (200, 503), response.text
    assert response.status_code != 401


def test_the_rate_limit_counts_requests_under_a_root_path():
    app = create_app(Settings(rate_limit="2/minute", preload_on_start=False),
                     registry_with(FakeChatEngine("fake-chat")))

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app, root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get("/api/v1/models")).status_code for _ in range(3)] + [
                (await client.get("/api/health")).status_code]

    assert asyncio.run(run()) == [200, 200, 429, 200]


def test_route_path_strips_only_a_whole_root_segment():
    scope = {"type": "http", "path": "/apiv1/models", "root_path": "/api"}
    assert route_path(scope) == "/apiv1/models"
    assert route_path({**scope, "path": "/api"}) == "/"
    assert route_path({**scope, "path": "/api/v1/x"}) == "/v1/x"
