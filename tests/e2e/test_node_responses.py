"""The official `openai` Node package against /v1/responses on the real server
(tests/e2e/node/responses_check.mjs); installed as tests/e2e/test_node_client.py does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_node_client import NODE_DIR, node_openai  # noqa: F401 - fixture
from tests.e2e.test_responses_e2e import KEY, chat_only_server

pytestmark = pytest.mark.slow

SCRIPT = NODE_DIR / "responses_check.mjs"


def test_node_client_responses(node_openai, tmp_path: Path):  # noqa: F811
    for url in chat_only_server(str(tmp_path / "data"), tmp_path / "server.log"):
        run = subprocess.run([node_openai, str(SCRIPT), url, "SmolLM2-135M-Instruct", KEY],
                             capture_output=True, text=True, timeout=600, cwd=NODE_DIR)
    assert run.returncode == 0, f"node failed:\n{run.stdout}\n{run.stderr}"
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["plain"]["status"] in ("completed", "incomplete") and out["plain"]["text"]
    assert out["plain"]["usage"]["input_tokens"] > 0
    types = out["stream"]["types"]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert out["stream"]["numbers"] == list(range(len(types)))
    assert out["stream"]["deltas"] and out["stream"]["deltas"] == out["stream"]["finalText"]
    assert out["call"]["name"] == "get_weather"
    assert isinstance(json.loads(out["call"]["arguments"])["city"], str)
    assert out["retrieved"] == out["plain"]["id"]
    assert out["notFound"] is True
