"""Codex CLI (npm ``@openai/codex``, whose Linux binary ships in the package) against the real
server through ``wire_api = "responses"``: ``codex exec`` on a short prompt must finish
without a stream error. Codex is strict about the event stream (every event typed and
numbered, the response object in the lifecycle events, ``response.completed`` with the full
output), and treats ``response.incomplete`` as an error.

The package is installed from npm into ``~/.cache/labs-api-tests/codex`` on the first run and
reused after. Skipped, saying why, without npm or where the binary cannot run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_responses_e2e import KEY, chat_only_server

pytestmark = pytest.mark.slow

CODEX_VERSION = "0.171.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labs-api-tests" / \
    f"codex-{CODEX_VERSION}"
BINARY = CACHE / "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
#: Codex's own base instructions, its environment context, web search and sub-agents make
#: ~10k tokens, more than SmolLM2's 8192; with these it sends about 2k (issue 14).
CONFIG = """\
model = "{model}"
model_provider = "labs"
model_instructions_file = "{instructions}"
include_environment_context = false
include_apps_instructions = false
include_collaboration_mode_instructions = false
web_search = "disabled"
model_reasoning_summary = "none"
project_doc_max_bytes = 0

[features]
multi_agent = false
goals = false

[model_providers.labs]
name = "labs-api"
base_url = "{base_url}/v1"
wire_api = "responses"
env_key = "LABS_CODEX_TEST_KEY"
"""


@pytest.fixture(scope="module")
def codex() -> Path:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"the test installs Codex's x86_64 Linux binary (this is "
                    f"{platform.system()} {platform.machine()})")
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("needs npm on PATH to install @openai/codex")
    if not BINARY.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--no-save",
             "--no-package-lock", f"@openai/codex@{CODEX_VERSION}"],
            capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or not BINARY.exists():
            pytest.skip(f"could not install @openai/codex from npm: {result.stderr[-500:]}")
    probe = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True,
                           timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"the Codex binary does not run here: {probe.stderr[-300:]}")
    return BINARY


def test_codex_exec_finishes_without_a_stream_error(codex, tmp_path):
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    instructions = tmp_path / "instructions.md"
    instructions.write_text("You are a coding assistant. Answer briefly.\n")
    # Codex sends no temperature: the server's default decides, and greedy is repeatable
    # (sampled, the 135M model sometimes rambles to max_output_tokens, which Codex reports
    # as an error).
    for url in chat_only_server(str(tmp_path / "data"), tmp_path / "server.log",
                                LABS_TEMPERATURE="0"):
        (home / "config.toml").write_text(CONFIG.format(
            model="SmolLM2-135M-Instruct", instructions=instructions, base_url=url))
        env = {**os.environ, "CODEX_HOME": str(home), "LABS_CODEX_TEST_KEY": KEY}
        run = subprocess.run([str(codex), "exec", "--skip-git-repo-check", "Say hello."],
                             cwd=work, env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=600)
    output = run.stdout + run.stderr
    # Greedy is repeatable on one machine, not across CPUs: on some the 135M model repeats a
    # sentence until the reply budget. Codex then read the whole stream, response.incomplete
    # included, and reports the model's cut (its only error line, exit code 1): the protocol
    # worked. Anything else it reports is a failure.
    cut = "ERROR: Incomplete response returned, reason: max_output_tokens"
    errors = [line for line in output.splitlines() if "ERROR" in line and line.strip() != cut]
    assert not errors, output[-3000:]
    assert run.returncode == (1 if cut in output else 0), output[-3000:]
    for failure in ("stream disconnected", "stream closed", "Reconnecting"):
        assert failure not in output, output[-3000:]
    assert "tokens used" in output
    assert run.stdout.strip() or cut in output  # the model's answer, or its cut
