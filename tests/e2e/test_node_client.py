"""The official `openai` Node package against the real server (tests/e2e/node/client_check.mjs):
chat plain, streaming, JSON mode, a required tool call, embeddings (the SDK's default base64,
decoded by the SDK), a transcription (plain and streamed) and the exception class of an unknown
model.

The package is installed from npm into tests/e2e/node/node_modules (ignored by git) on the first
run and reused after. Skipped only when `node` or `npm` is missing.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "client_check.mjs"
#: openai 7 needs Node 22; major 6 runs on Node 20 (Debian's, and CI's).
OPENAI_NODE_MAJOR = 6
EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2

pytestmark = pytest.mark.slow


def installed_major() -> int | None:
    package = NODE_DIR / "node_modules" / "openai" / "package.json"
    if not package.exists():
        return None
    return int(json.loads(package.read_text())["version"].split(".")[0])


@pytest.fixture(scope="module")
def node_openai() -> str:
    """The path of `node`, once the `openai` package of the pinned major is installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"needs Node.js and npm on PATH (node: {node}, npm: {npm})")
    if installed_major() != OPENAI_NODE_MAJOR:
        result = subprocess.run(
            [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--no-save",
             "--no-package-lock", f"openai@{OPENAI_NODE_MAJOR}"],
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"npm install failed:\n{result.stdout}\n{result.stderr}"
        assert installed_major() == OPENAI_NODE_MAJOR
    return node


@pytest.fixture(scope="module")
def results(node_openai, base_url, chat_model_id) -> dict:
    models = httpx.get(f"{base_url}/v1/models").json()["data"]
    embedding_model = next(m["id"] for m in models if "MiniLM" in m["id"])
    run = subprocess.run([node_openai, str(SCRIPT), base_url, chat_model_id, embedding_model],
                         capture_output=True, text=True, timeout=300, cwd=NODE_DIR)
    assert run.returncode == 0, f"node failed:\n{run.stdout}\n{run.stderr}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def check(results: dict, name: str) -> dict:
    result = results[name]
    assert result["ok"], f"{name}: {result.get('error')}"
    return result


def test_lists_models(results, chat_model_id):
    assert chat_model_id in check(results, "models")["ids"]


def test_plain_chat(results, chat_model_id):
    chat = check(results, "chat")
    assert chat["object"] == "chat.completion" and chat["model"] == chat_model_id
    assert chat["role"] == "assistant" and chat["content"]
    assert chat["finish_reason"] in ("stop", "length")
    usage = chat["usage"]
    assert 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streaming_chat_collects_deltas(results):
    stream = check(results, "stream")
    assert len(stream["deltas"]) > 1 and stream["text"] == "".join(stream["deltas"])
    assert stream["ids"] == 1
    assert stream["finish_reason"] in ("stop", "length")
    assert 0 < stream["usage"]["completion_tokens"] <= 16  # stream_options.include_usage


def test_json_mode_parses(results):
    json_mode = check(results, "json_mode")  # the script's JSON.parse succeeded
    assert json_mode["is_object"], json_mode["content"]
    assert json_mode["finish_reason"] == "stop"


def test_required_tool_call(results):
    tools = check(results, "tools")
    assert tools["finish_reason"] == "tool_calls" and tools["content"] is None
    [call] = tools["calls"]
    assert call["type"] == "function" and call["name"] == "get_weather"
    assert call["id"].startswith("call_")
    assert isinstance(call["arguments"]["city"], str)


def test_embeddings_from_the_sdk_default_base64(results):
    embeddings = check(results, "embeddings")
    assert embeddings["object"] == "list" and embeddings["count"] == 2
    assert embeddings["indexes"] == [0, 1]
    assert embeddings["lengths"] == [EMBEDDING_DIMENSIONS] * 2
    assert embeddings["all_numbers"]
    for norm in embeddings["norms"]:
        assert math.isclose(norm, 1.0, abs_tol=1e-3)
    assert embeddings["usage"]["prompt_tokens"] > 0


def test_unknown_model_throws_not_found(results):
    error = check(results, "not_found")
    assert error["threw"], "an unknown model did not throw"
    assert error["is_not_found"] and error["class"] == "NotFoundError"
    assert error["status"] == 404
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert "no-such-model" in error["message"]


def test_transcription_of_our_own_speech(results):
    heard = check(results, "transcription")
    assert "quick brown fox" in heard["text"].lower(), heard["text"]
    assert heard["usage"]["type"] == "duration" and heard["usage"]["seconds"] >= 2
    assert heard["types"][-1] == "transcript.text.done" and len(heard["deltas"]) >= 1
    assert "".join(heard["deltas"]) == heard["done"] == heard["text"]
