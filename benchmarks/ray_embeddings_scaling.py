"""Embeddings throughput on Ray Serve with 1 and 2 embedding replicas (``labs-api serve --ray``).

Starts a local two-node Ray cluster on loopback (the test suite's ``tests/e2e/ray_cluster.py``:
a head and a worker, 2 logical CPUs each), deploys the server with 1 and then 2 embedding
replicas (0.5 CPU each, spread over the nodes), and sends many concurrent requests
(``--concurrency`` keep-alive connections) for ``--duration`` seconds per round: small ones of
one sentence, where the per-request cost of the HTTP proxy and ingress dominates, and ones of
16 sentences, where the model does (``--sentences 1,16``). The single-process server
(``labs-api``, no Ray) runs the same load as a reference. Prints a table of medians over
rounds and writes JSON to benchmarks/results/ray_embeddings_scaling.json.

Both Ray nodes are processes on this one machine, so replicas on "two nodes" still share its
cores with each other, with Ray Serve's HTTP proxy and ingress, and with this client.

    .venv/bin/python benchmarks/ray_embeddings_scaling.py [--rounds 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from common import labs_server, percentile, print_table, write_results  # noqa: E402

from tests.e2e.ray_cluster import labs_on_ray, ray_cluster  # noqa: E402

WORDS = ("river", "engine", "orange", "quiet", "market", "silver", "winter", "garden", "signal",
         "paper", "forest", "window", "number", "planet", "coffee", "ladder")


def sentence(i: int) -> str:
    """Distinct ordinary sentences of about ten words."""
    picks = [WORDS[(i * k + k * k) % len(WORDS)] for k in range(1, 8)]
    return f"The {picks[0]} near the {picks[1]} {i} was {picks[2]} and {picks[3]} all day."


class Connection:
    """A keep-alive HTTP/1.1 connection that POSTs JSON; far cheaper per request than httpx,
    which matters when the client shares 2 cores with the servers it measures."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: object) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                return await self._post(path, body)
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close()  # closed by the server while idle: reconnect once
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _post(self, path: str, body: object) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        payload = json.dumps(body).encode()
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                     + payload)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head[1:] if line)}
        if "content-length" not in headers:
            raise RuntimeError(f"no Content-Length in {head}")
        return int(head[0].split()[1]), await reader.readexactly(int(headers["content-length"]))

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def run_load(base_url: str, concurrency: int, per_request: int,
                   duration_s: float) -> dict[str, float]:
    """``concurrency`` clients posting back to back for ``duration_s``: sentences/s, latency."""
    host, port = base_url.removeprefix("http://").split(":")
    connections = [Connection(host, int(port)) for _ in range(concurrency)]
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + duration_s

    async def client(index: int) -> None:
        nonlocal failures
        count = 0
        while time.perf_counter() < deadline:
            texts = [sentence(index * 100_000 + count * per_request + j)
                     for j in range(per_request)]
            count += 1
            started = time.perf_counter()
            status, body = await connections[index].post("/v1/embeddings", {"input": texts})
            if status != 200 or len(json.loads(body)["data"]) != per_request:
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(i) for i in range(concurrency)))
    finally:
        for connection in connections:
            connection.close()
    elapsed = time.perf_counter() - started
    return {"sentences_per_s": len(latencies) * per_request / elapsed,
            "requests_per_s": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000, "p95_ms": percentile(latencies, 95) * 1000,
            "failures": failures}


def measure(base_url: str, args: argparse.Namespace) -> dict[int, list[dict[str, float]]]:
    """Rounds of each request shape (sentences per request), after a warm-up."""
    asyncio.run(run_load(base_url, args.concurrency, 1, args.warmup))
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.sentences}
    for _ in range(args.rounds):
        for per_request in args.sentences:
            load_before = os.getloadavg()[0]
            result = asyncio.run(run_load(base_url, args.concurrency, per_request,
                                          args.duration))
            # Other work on the machine skews a round: keep the load average beside it.
            result["loadavg_before"] = load_before
            runs[per_request].append(result)
    return runs


def replica_placement(address: str, expected: int) -> list[dict]:
    """Each embedding replica's pid, node and model calls (asked through a Serve handle)."""
    import ray
    from ray import serve

    ray.init(address=address, logging_level="error", log_to_driver=False)
    try:
        handle = serve.get_deployment_handle("Embedding", app_name="labs-api")
        found: dict[int, dict] = {}
        deadline = time.monotonic() + 60
        while len(found) < expected and time.monotonic() < deadline:
            info = handle.describe.remote().result(timeout_s=30)
            found[info["pid"]] = {"pid": info["pid"], "node": info["node_id"][:8],
                                  "model_calls": info["attributes"].get("model_calls")}
        return list(found.values())
    finally:
        ray.shutdown()


@contextlib.contextmanager
def on_ray(address: str, replicas: int, log_dir: Path) -> Iterator[str]:
    env = {"LABS_RAY_EMBEDDING_REPLICAS": str(replicas), "LABS_RAY_EMBEDDING_NUM_CPUS": "0.5",
           "LABS_RAY_CHAT_NUM_CPUS": "0.5", "LABS_RAY_SPEECH_NUM_CPUS": "0.25",
           "LABS_RAY_INGRESS_NUM_CPUS": "0.5", "LABS_LOG_LEVEL": "warning"}
    with labs_on_ray(address, env, log_dir / f"serve-{replicas}.log") as url:
        yield url


def summary(name: str, runs: dict[int, list[dict[str, float]]],
            placement: list[dict]) -> list[dict]:
    def med(rounds: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    return [{"setup": name, "sentences_per_request": n,
             "sentences_per_s": med(rounds, "sentences_per_s"),
             "requests_per_s": med(rounds, "requests_per_s"), "p50_ms": med(rounds, "p50_ms"),
             "p95_ms": med(rounds, "p95_ms"), "failures": sum(r["failures"] for r in rounds),
             "rounds": rounds, "replicas": placement} for n, rounds in runs.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the rounds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sentences", type=lambda v: [int(n) for n in v.split(",")],
                        default=[1, 16], help="sentences per request, one load per value")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the single-process reference")
    args = parser.parse_args()
    results = []
    if not args.no_reference:
        with labs_server() as url:
            results += summary("single process, no Ray", measure(url, args), [])
    log_dir = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    with ray_cluster(nodes=2, cpus=2) as cluster:
        for replicas in (1, 2):
            with on_ray(cluster.address, replicas, log_dir) as url:
                runs = measure(url, args)
                placement = replica_placement(cluster.address, replicas)
                results += summary(f"Ray Serve, {replicas} embedding replica"
                                   f"{'s' if replicas > 1 else ''}", runs, placement)
    rows = [[r["setup"], r["sentences_per_request"], r["sentences_per_s"], r["requests_per_s"],
             r["p50_ms"], r["p95_ms"], r["failures"],
             " ".join(f"{p['node']}:{p['model_calls']}" for p in r["replicas"]) or "-"]
            for r in results]
    print_table(f"Embeddings, {args.concurrency} concurrent clients, median of {args.rounds} "
                f"rounds of {args.duration:.0f} s",
                ["setup", "sentences/request", "sentences/s", "requests/s", "p50 ms", "p95 ms",
                 "failures", "replicas (node:model calls)"], rows)
    write_results("ray_embeddings_scaling", {"arguments": vars(args), "results": results})


if __name__ == "__main__":
    main()
