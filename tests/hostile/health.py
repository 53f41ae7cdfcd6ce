"""Watching /health answer while something else happens. The probe runs in a process of its
own (``python -m tests.hostile.health URL``), so the figures are the server's, not those of a
test process busy building or sending a large body."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class HealthLatency:
    samples_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples_ms)
        if not ordered:
            return float("inf")
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> str:
        return (f"/health: {len(self.samples_ms)} samples, p50 {self.percentile(50):.1f} ms, "
                f"p99 {self.percentile(99):.1f} ms, max {max(self.samples_ms, default=0):.1f} ms"
                f", failures {len(self.failures)}")


@contextlib.contextmanager
def watching_health(base_url: str, interval_s: float = 0.005) -> Iterator[HealthLatency]:
    """Poll ``/health`` every ``interval_s`` until the block ends; the result then holds each
    latency (a failed or non-200 probe is a failure, recorded with its reason)."""
    result = HealthLatency()
    probe = subprocess.Popen([sys.executable, "-m", "tests.hostile.health", base_url,
                              str(interval_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             cwd=ROOT, text=True)
    assert probe.stdout is not None and probe.stdin is not None
    assert probe.stdout.readline().strip() == "started"
    time.sleep(0.2)  # a few samples before the work starts
    try:
        yield result
    finally:
        time.sleep(0.2)
        out, _ = probe.communicate("stop\n", timeout=30)
        report = json.loads(out)
        result.samples_ms.extend(report["samples_ms"])
        result.failures.extend(report["failures"])


def probe(base_url: str, interval_s: float) -> None:
    """The probe process: poll until a line arrives on stdin, then print the figures."""
    samples: list[float] = []
    failures: list[str] = []
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    with httpx.Client(base_url=base_url, timeout=10) as client:
        client.get("/health")
        print("started", flush=True)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = client.get("/health")
                if response.status_code != 200 or response.json() != {"status": "ok"}:
                    failures.append(f"{response.status_code} {response.text[:80]}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            else:
                samples.append((time.perf_counter() - started) * 1000)
            stop.wait(interval_s)
    print(json.dumps({"samples_ms": samples, "failures": failures}), flush=True)


if __name__ == "__main__":
    probe(sys.argv[1], float(sys.argv[2]))
