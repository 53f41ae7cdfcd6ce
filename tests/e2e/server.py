"""Starting the real server as a subprocess, on a free port, and waiting until it is ready."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

READY_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(env: dict[str, str] | None = None, log_path: Path | None = None,
                   wait_ready: bool = True) -> Iterator[str]:
    """Run ``labs-api`` with ``env`` added to the environment; yield its base URL."""
    port = free_port()
    full_env = {**os.environ, "LABS_HOST": "127.0.0.1", "LABS_PORT": str(port),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "labs_api"], env=full_env,
                               stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        if wait_ready:
            wait_until_ready(base_url, process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]


def wait_until_ready(base_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            response = httpx.get(f"{base_url}/ready", timeout=2)
            if response.status_code == 200:
                return
            if response.json().get("status") == "failed":
                raise RuntimeError(f"a model failed to load: {response.text}")
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"server not ready after {READY_TIMEOUT_S} s")


def wait_for_health(url: str, timeout: float = 120) -> None:
    """Until ``/health`` answers 200 (for servers started with ``wait_ready=False``)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server did not start")
