"""Watching /health answer while something else happens: a background thread polls it on one
keep-alive connection and records each latency."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx


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
def watching_health(base_url: str, interval_s: float = 0.01) -> Iterator[HealthLatency]:
    """Poll ``/health`` every ``interval_s`` until the block ends; the result holds each
    latency (a failed or non-200 probe is a failure, recorded with its reason)."""
    result = HealthLatency()
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    response = client.get("/health")
                    if response.status_code != 200 or response.json() != {"status": "ok"}:
                        result.failures.append(f"{response.status_code} {response.text[:80]}")
                except httpx.HTTPError as exc:
                    result.failures.append(repr(exc))
                else:
                    result.samples_ms.append((time.perf_counter() - started) * 1000)
                stop.wait(interval_s)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.2)  # a few samples before the work starts
    try:
        yield result
    finally:
        time.sleep(0.2)
        stop.set()
        thread.join(timeout=15)
