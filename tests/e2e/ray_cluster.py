"""A real two-node Ray cluster on loopback, and ``labs-api serve --ray`` on it, for tests and
benchmarks.

Each node is a ``ray start --block`` process we own: stopping the cluster signals exactly the
processes it started (the ``ray start`` processes and everything below them, found through
/proc before any is signalled), never other Ray clusters on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

RAY_BIN = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry))
    return tree


def descendants(roots: list[int]) -> list[int]:
    """``roots`` and all processes below them, parents first."""
    tree = _children()
    found: list[int] = []
    pending = list(roots)
    while pending:
        pid = pending.pop(0)
        if pid in found:
            continue
        found.append(pid)
        pending.extend(tree.get(pid, []))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_processes(pids: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM each of ``pids``, then SIGKILL those still alive after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class RayCluster:
    """Head and worker nodes started on 127.0.0.1, each with ``cpus`` logical CPUs."""

    nodes: int = 2
    cpus: float = 2
    object_store_bytes: int = 100 * 1024 * 1024
    start_timeout_s: float = 90
    address: str = ""
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="labs-ray-")))
    processes: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1"}

    def _start_node(self, head: bool) -> None:
        log = open(self.temp_dir / f"node{len(self.processes)}.log", "w")  # noqa: SIM115
        command = [str(RAY_BIN), "start", "--block", "--node-ip-address", "127.0.0.1",
                   "--num-cpus", str(self.cpus), "--object-store-memory",
                   str(self.object_store_bytes), "--disable-usage-stats",
                   "--dashboard-agent-listen-port", str(free_port()),
                   "--metrics-export-port", str(free_port())]
        if head:
            port = free_port()
            self.address = f"127.0.0.1:{port}"
            command += ["--head", "--port", str(port), "--include-dashboard=false",
                        "--ray-client-server-port", str(free_port()),
                        "--temp-dir", str(self.temp_dir)]
        else:
            command += ["--address", self.address]
        self.processes.append(subprocess.Popen(command, env=self.env(), stdout=log,
                                               stderr=subprocess.STDOUT,
                                               start_new_session=True))
        log.close()

    def start(self) -> None:
        self._start_node(head=True)
        self.wait_for_nodes(1)
        for _ in range(self.nodes - 1):
            self._start_node(head=False)
        self.wait_for_nodes(self.nodes)

    def alive_nodes(self) -> int:
        result = subprocess.run(
            [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], "
             "logging_level='error'); print(sum(n['Alive'] for n in ray.nodes()))",
             self.address], env=self.env(), capture_output=True, text=True, timeout=60)
        return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while self.alive_nodes() < count:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"ray start exited with {process.returncode}; see "
                                       f"{self.temp_dir}/node*.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray node(s) not up after {self.start_timeout_s} s")
            time.sleep(1)

    def stop(self) -> None:
        """Stop every process this cluster started (and only those)."""
        stop_processes(descendants([p.pid for p in self.processes]))
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def ray_cluster(**options) -> Iterator[RayCluster]:
    cluster = RayCluster(**options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def labs_on_ray(address: str, env: dict[str, str], log_path: Path,
                ready_timeout_s: float = 240) -> Iterator[str]:
    """Run ``labs-api serve --ray --address ADDRESS`` and wait until /ready; yield the URL."""
    port = free_port()
    full_env = {**os.environ, "LABS_HOST": "127.0.0.1", "LABS_PORT": str(port),
                "LABS_RAY_PROXY_LOCATION": "HeadOnly", "RAY_USAGE_STATS_ENABLED": "0",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    log = open(log_path, "w")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "labs_api", "serve", "--ray",
                                "--address", address], env=full_env, stdout=log,
                               stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"labs-api serve --ray exited with {process.returncode}: "
                                   f"{log_path.read_text()[-3000:]}")
            # Deployed (every replica up: "serving on" is printed) and ready (models loaded).
            deployed = "labs-api: serving on" in log_path.read_text(errors="replace")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = httpx.get(f"{base_url}/ready", timeout=5)
                if response.status_code == 200 and deployed:
                    break
                if response.json().get("status") == "failed":
                    raise RuntimeError(f"a model failed to load: {response.text}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {ready_timeout_s} s: "
                                   f"{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)  # deletes the application, then exits
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
