"""Shared pieces of the benchmark scripts: starting servers, percentiles, tables, JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

RESULTS_DIR = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server_process(command: list[str], env: dict[str, str], ready_path: str,
                   port: int, timeout_s: float = 300,
                   log_path: Path | None = None, cwd: str | None = None) -> Iterator[str]:
    """Start a server, wait until ``ready_path`` answers 200, yield its base URL, stop it."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                               cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[:3]} exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + ready_path, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[:3]} not ready after {timeout_s} s")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]


def labs_server(env: dict[str, str] | None = None, ready_path: str = "/ready",
                log_path: Path | None = None) -> contextlib.AbstractContextManager[str]:
    """Our server (``python -m labs_api``) on a free port with ``env`` added."""
    port = free_port()
    env = {"LABS_HOST": "127.0.0.1", "LABS_PORT": str(port), "LABS_LOG_LEVEL": "warning",
           **(env or {})}
    return server_process([sys.executable, "-m", "labs_api"], env, ready_path, port,
                          log_path=log_path)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(columns)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def cpu_name() -> str:
    """The processor's model name (figures depend on it: say it beside each one)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def write_results(name: str, data: dict) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = {"machine": {"cpus": os.cpu_count(), "cpu": cpu_name(),
                        "python": platform.python_version(), "platform": platform.platform()},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **data}
    path.write_text(json.dumps(data, indent=2))
    print(f"\nwrote {path}")
    return path
