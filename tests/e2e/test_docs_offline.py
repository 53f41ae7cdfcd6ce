"""/docs renders in a real browser with the network cut: Swagger UI comes from this server.

Headless Chromium (Debian's ``chromium`` package, which .ci/run installs) resolves no host but
127.0.0.1 and sends anything else to a dead proxy. A control page that loads Swagger UI from the
CDN, as FastAPI's default /docs does, stays blank under the same flags: that shows the cut works.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import free_port, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")

OFFLINE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
    # The network cut: no name resolves except 127.0.0.1, and other traffic goes to a closed
    # port on loopback (loopback itself bypasses proxies).
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--virtual-time-budget=10000",
]
OPBLOCK_PATH = re.compile(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"')


def rendered_dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, *OFFLINE_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def wait_for_ok(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200")


@pytest.fixture(scope="module")
def docs_server() -> Iterator[str]:
    """The real server; /docs needs no model, so none is loaded."""
    with running_server({"LABS_PRELOAD_ON_START": "false"}, wait_ready=False) as url:
        wait_for_ok(f"{url}/health")
        yield url


def test_docs_render_the_endpoint_list_offline(docs_server):
    dom = rendered_dom(f"{docs_server}/docs")
    paths = set(OPBLOCK_PATH.findall(dom))
    assert {"/v1/chat/completions", "/v1/models", "/health"} <= paths, dom[-2000:]


def test_docs_render_with_api_keys_on():
    with running_server({"LABS_PRELOAD_ON_START": "false", "LABS_API_KEY": "k"},
                        wait_ready=False) as url:
        wait_for_ok(f"{url}/health")
        assert httpx.get(f"{url}/v1/models").status_code == 401
        dom = rendered_dom(f"{url}/docs")
    assert "/v1/chat/completions" in OPBLOCK_PATH.findall(dom)
    assert "authorize" in dom.lower()  # the bearer key can be entered on the page


def test_a_cdn_docs_page_stays_blank_under_the_same_cut():
    """The control: FastAPI's default /docs (Swagger UI from a CDN) renders nothing here."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/chat/completions")
    def endpoint() -> dict:
        return {}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_ok(f"http://127.0.0.1:{port}/openapi.json")
        html = httpx.get(f"http://127.0.0.1:{port}/docs").text
        assert "https://" in html  # it does load from a CDN
        dom = rendered_dom(f"http://127.0.0.1:{port}/docs")
        assert OPBLOCK_PATH.findall(dom) == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)

