"""The real server on the bundled models, started once for the hostile-input suite with short
connection deadlines (so the slow-client tests take seconds), reusing the end-to-end harness."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import running_server

HEADER_TIMEOUT_S = 2.0
KEEP_ALIVE_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 96

HOSTILE_ENV = {
    "LABS_HEADER_TIMEOUT": str(HEADER_TIMEOUT_S),
    "LABS_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_TIMEOUT_S),
    "LABS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}


@pytest.fixture(scope="session")
def hostile_log(tmp_path_factory) -> object:
    return tmp_path_factory.mktemp("hostile") / "server.log"


@pytest.fixture(scope="session")
def hostile_url(hostile_log) -> Iterator[str]:
    with running_server(env=HOSTILE_ENV, log_path=hostile_log) as url:
        yield url


@pytest.fixture(scope="session")
def chat_model(hostile_url) -> str:
    models = httpx.get(f"{hostile_url}/v1/models").json()["data"]
    return next(m["id"] for m in models if m.get("owned_by") != "speech" and "MiniLM"
                not in m["id"] and "piper" not in m["id"].lower() and "joe" not in m["id"])
