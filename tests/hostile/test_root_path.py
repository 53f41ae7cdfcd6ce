"""The real server started under a path prefix (LABS_ROOT_PATH=/api, uvicorn's --root-path, as
behind a reverse proxy): the API key and the rate limit apply to every /v1 route. uvicorn puts
the root path in front of every request path, so a request for /v1/models (from a proxy that
strips /api) is routed, and one for /api/v1/models (a proxy that does not) reaches no route;
neither gets past the key. Probes and docs stay open."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import running_server

pytestmark = pytest.mark.slow

KEY = "sk-hostile-root"
RATE = 6  # per minute


@pytest.fixture(scope="module")
def prefixed_url(tmp_path_factory) -> Iterator[str]:
    env = {"LABS_ROOT_PATH": "/api", "LABS_API_KEY": KEY, "LABS_RATE_LIMIT": f"{RATE}/minute",
           "LABS_PRELOAD_ON_START": "false"}
    log = tmp_path_factory.mktemp("root") / "server.log"
    with running_server(env=env, log_path=log, wait_ready=False) as url:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield url


@pytest.mark.parametrize("path", ["/v1/models", "/api/v1/models", "/v1/chat/completions",
                                  "/api/v1/embeddings", "/api/api/v1/models", "//v1/models"])
def test_no_spelling_of_a_v1_path_skips_the_key(prefixed_url, path):
    response = httpx.post(prefixed_url + path, json={}) if "models" not in path else \
        httpx.get(prefixed_url + path)
    assert response.status_code == 401, (path, response.text)
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_with_the_key_the_routes_answer_and_the_rate_limit_counts(prefixed_url):
    headers = {"Authorization": f"Bearer {KEY}"}
    statuses = []
    for _ in range(RATE + 1):
        response = httpx.get(prefixed_url + "/v1/models", headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert "SmolLM2-135M-Instruct" in [m["id"] for m in response.json()["data"]]
    assert statuses == [200] * RATE + [429], statuses
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_an_unstripped_prefix_reaches_no_route_even_with_the_key(prefixed_url):
    response = httpx.get(prefixed_url + "/api/v1/models",
                         headers={"Authorization": f"Bearer {KEY}x"})
    assert response.status_code == 401  # a wrong key is refused before routing


@pytest.mark.parametrize("path", ["/health", "/ready", "/openapi.json", "/docs"])
def test_probes_and_docs_stay_open(prefixed_url, path):
    response = httpx.get(prefixed_url + path)
    assert response.status_code in (200, 503), (path, response.status_code)  # 503: not loaded
    assert "invalid_api_key" not in response.text
    if path == "/openapi.json":
        assert response.json()["servers"] == [{"url": "/api"}]
