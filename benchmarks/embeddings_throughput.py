"""Embedding throughput: does dynamic batching make 64 small requests cost what one big one does?

Measures, in one run, sentences per second for
  (a) one HTTP request carrying 64 sentences,
  (b) 64 concurrent HTTP requests of one sentence each (64 keep-alive connections),
  (c) the engine's own batch encode of the same 64 sentences, in this process, no HTTP,
and reports (b)/(c): how much of the engine's batch speed concurrent single-sentence clients get.

The client shares the machine with the server, so it must be cheap: (a) and (b) use a minimal
asyncio HTTP/1.1 client (about 0.1 ms of CPU per request). httpx.AsyncClient spends several ms of
CPU per request with 64 pooled connections - more than the server does - so the extra row (b')
sends (b) through httpx to show that cost; on a 2-core machine it measures the client.

The script starts its own server (``python -m labs_api`` on a free port, models loaded on first
use so only the embedding model loads), interleaves the three measurements round by round so
background load hits them alike, prints a table of medians, and writes JSON to
benchmarks/results/. LABS_EMBEDDING_* variables in the environment reach both the server and
the in-process engine.

    .venv/bin/python benchmarks/embeddings_throughput.py [--rounds 15] [--sentences 64]

    .venv/bin/python benchmarks/embeddings_throughput.py --peers [--rounds 5]

instead compares servers, all up together and measured interleaved round by round: ours on
each embedding backend (openvino, onnx, onnx-int8, torch) and Infinity (``infinity-emb``,
installed by benchmarks/peers/infinity-venv into a venv of its own under ~/.cache/labs-api/)
on the same bundled MiniLM directory, with (a) one request of 64, (b) 64 and (d) 256 concurrent
one-sentence clients; writes benchmarks/results/embeddings_peers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import (  # benchmarks/common.py (the script's own folder)
    cpu_name,
    free_port,
    labs_server,
    server_process,
)

RESULTS = Path(__file__).parent / "results"

SUBJECTS = ["The old fisherman", "A small startup", "My neighbour's cat", "The city council",
            "A team of researchers", "The night train", "Our quarterly report", "The new library"]
VERBS = ["quietly described", "argued about", "finally repaired", "carefully measured",
         "never understood", "celebrated", "photographed", "rewrote"]
OBJECTS = ["the broken lighthouse by the harbour", "a plan to reduce traffic downtown",
           "the recipe for sourdough bread", "an unusual pattern in the rainfall data",
           "the rules of the chess tournament", "a melody played on an old piano",
           "the budget for next year's festival", "the migration of birds in autumn"]


def sentences(n: int) -> list[str]:
    """``n`` distinct, ordinary sentences of 8 to 16 words."""
    out = []
    for i in range(n):
        text = f"{SUBJECTS[i % 8]} {VERBS[(i // 8) % 8]} {OBJECTS[(i * 3 + i // 8) % 8]}"
        if i % 3 == 0:
            text += " before the end of the week"
        out.append(f"{text}.")
    return out


def server(log_path: Path) -> contextlib.AbstractContextManager[str]:
    """The real server in a subprocess, models loaded on first use; yields its base URL."""
    return labs_server({"LABS_PRELOAD_ON_START": "false"}, ready_path="/health",
                       log_path=log_path)


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads a Content-Length body."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: object) -> tuple[int, bytes]:
        try:
            return await self._post(path, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closes connections idle past its keep-alive timeout (uvicorn: 5 s).
            self.close()
            await self.open()
            return await self._post(path, body)

    async def _post(self, path: str, body: object) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None or self.reader.at_eof():
            await self.open()
        assert self.reader is not None and self.writer is not None
        payload = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
        self.writer.write(head.encode() + payload)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(b":", 1)[1]) for line in lines[1:]
                      if line.lower().startswith(b"content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def one_request(connection: Connection, texts: list[str],
                      path: str = "/v1/embeddings") -> float:
    started = time.perf_counter()
    status, body = await connection.post(path, {"input": texts})
    elapsed = time.perf_counter() - started
    _check(status, body, len(texts))
    return elapsed


async def concurrent_requests(connections: list[Connection], texts: list[str],
                              path: str = "/v1/embeddings") -> float:
    started = time.perf_counter()
    replies = await asyncio.gather(*(c.post(path, {"input": [text]})
                                     for c, text in zip(connections, texts, strict=True)))
    elapsed = time.perf_counter() - started
    for status, body in replies:
        _check(status, body, 1)
    return elapsed


async def _httpx_post(client: httpx.AsyncClient, text: str) -> httpx.Response:
    try:
        return await client.post("/v1/embeddings", json={"input": text})
    except (httpx.ReadError, httpx.RemoteProtocolError):  # a pooled connection closed when idle
        return await client.post("/v1/embeddings", json={"input": text})


async def concurrent_httpx(client: httpx.AsyncClient, texts: list[str]) -> float:
    started = time.perf_counter()
    responses = await asyncio.gather(*(_httpx_post(client, text) for text in texts))
    elapsed = time.perf_counter() - started
    for response in responses:
        _check(response.status_code, response.content, 1)
    return elapsed


def _check(status: int, body: bytes, n: int) -> None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
    if len(json.loads(body)["data"]) != n:
        raise RuntimeError("wrong number of embeddings")


def load_engine():
    """The engine the server runs, with the same settings, loaded in this process."""
    from labs_api.engines.embedding.factory import load_embedding_engine
    from labs_api.settings import load_settings

    settings = load_settings()
    engine = load_embedding_engine(settings.embedding_model, settings.embedding_model, settings)
    engine.prepare_thread()
    return engine, settings


def engine_batch(engine, texts: list[str]) -> float:
    started = time.perf_counter()
    vectors = engine.embed(texts, "document")
    elapsed = time.perf_counter() - started
    if vectors.shape[0] != len(texts):
        raise RuntimeError("wrong number of embeddings")
    return elapsed


async def measure(base: str, engine, texts: list[str], rounds: int, warmup: int,
                  with_httpx: bool) -> dict[str, list[float]]:
    n = len(texts)
    host, port = base.removeprefix("http://").split(":")
    connections = [Connection(host, int(port)) for _ in texts]
    await asyncio.gather(*(c.open() for c in connections))
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "b_httpx": []}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
            await one_request(connections[0], texts[:2])  # loads the model on first use
            for number in range(warmup + rounds):
                measured = {
                    "a": await one_request(connections[0], texts),
                    "b": await concurrent_requests(connections, texts),
                    "c": engine_batch(engine, texts),
                }
                if with_httpx:
                    measured["b_httpx"] = await concurrent_httpx(client, texts)
                if number >= warmup:
                    for key, value in measured.items():
                        times[key].append(value)
    finally:
        for connection in connections:
            connection.close()
    return {key: values for key, values in times.items() if values}


def infinity_command() -> str:
    """Infinity's ``infinity_emb`` in its own venv, installed first if missing."""
    script = Path(__file__).parent / "peers" / "infinity-venv"
    return subprocess.run([str(script)], check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]


def model_dir_with_onnx(model_dir: str, scratch: Path) -> str:
    """The bundled MiniLM's files (links) plus our own fp32 ONNX export as ``model.onnx``:
    Infinity's optimum engine needs an ONNX file in the model's folder and never exports one."""
    from labs_api.engines.embedding.onnx_engine import OnnxEmbeddingEngine

    engine = OnnxEmbeddingEngine("export", model_dir, local_files_only=True)
    folder = scratch / "minilm-with-onnx"
    folder.mkdir(parents=True, exist_ok=True)
    for entry in Path(model_dir).iterdir():
        link = folder / entry.name
        if not link.exists():
            link.symlink_to(entry)
    onnx = folder / "model.onnx"
    if not onnx.exists():
        onnx.write_bytes(engine.model_path.read_bytes())
    engine.close()
    return str(folder)


@contextlib.contextmanager
def infinity_server(model_dir: str, engine: str, threads: int, log_path: Path):
    """Infinity on ``model_dir`` (the bundled MiniLM), its own dynamic batching, 64 a batch;
    its optimum (ONNX Runtime) engine on our fp32 export of the same model."""
    cwd = None
    if engine == "optimum":
        # Run in the folder and name it ".": with an absolute --model-id, Infinity 0.0.78 hands
        # optimum the ONNX file's absolute path, which optimum refuses.
        cwd = model_dir_with_onnx(model_dir, Path(tempfile.mkdtemp(prefix="infinity-")))
        model_dir = "."
    port = free_port()
    command = [infinity_command(), "v2", "--model-id", model_dir, "--engine", engine,
               "--device", "cpu", "--batch-size", "64", "--host", "127.0.0.1",
               "--port", str(port), "--url-prefix", "/v1"]
    env = {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with server_process(command, env, "/v1/models", port, timeout_s=600,
                        log_path=log_path, cwd=cwd) as base:
        yield base


async def measure_peers(bases: dict[str, str], texts: list[str], rounds: int,
                        warmup: int, wide: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per measurement, per target, interleaved: every round runs every target, the
    order rotated."""
    many = [f"{texts[i % len(texts)][:-1]} (number {i})." for i in range(wide)]
    targets = list(bases)
    pools: dict[str, list[Connection]] = {}
    for target, base in bases.items():
        host, port = base.removeprefix("http://").split(":")
        pools[target] = [Connection(host, int(port)) for _ in range(wide)]
        await asyncio.gather(*(c.open() for c in pools[target]))
    times: dict[str, dict[str, list[float]]] = {t: {"a": [], "b": [], "d": []} for t in targets}
    try:
        for target in targets:  # loads the model on first use
            await one_request(pools[target][0], texts[:2])
        for number in range(warmup + rounds):
            shift = number % len(targets)
            for target in targets[shift:] + targets[:shift]:
                pool = pools[target]
                measured = {"a": await one_request(pool[0], texts),
                            "b": await concurrent_requests(pool[:len(texts)], texts),
                            "d": await concurrent_requests(pool, many)}
                if number >= warmup:
                    for key, value in measured.items():
                        times[target][key].append(value)
            print(f"  round {number + 1} of {warmup + rounds}", flush=True)
    finally:
        for pool in pools.values():
            for connection in pool:
                connection.close()
    return times


def peers(args: argparse.Namespace) -> None:
    from labs_api.engines.embedding.factory import bundled_embedding_path

    RESULTS.mkdir(exist_ok=True)
    texts = sentences(args.sentences)
    model_dir = str(bundled_embedding_path())
    logs = Path(tempfile.gettempdir())
    threads = args.threads
    with contextlib.ExitStack() as stack:
        bases: dict[str, str] = {}
        for backend in args.backends.split(","):
            # openvino-f32: OpenVINO held to f32, what a CPU without bf16 units runs
            env = {"LABS_PRELOAD_ON_START": "false",
                   "LABS_EMBEDDING_BACKEND": backend.removesuffix("-f32"),
                   "LABS_EMBEDDING_THREADS": str(threads)}
            if backend == "openvino-f32":
                env["LABS_EMBEDDING_PRECISION"] = "f32"
            bases[f"labs-api ({backend})"] = stack.enter_context(labs_server(
                env, ready_path="/health", log_path=logs / f"labs-embeddings-{backend}.log"))
        for engine in args.infinity_engines.split(","):
            if not engine:
                continue
            try:
                bases[f"Infinity ({engine})"] = stack.enter_context(infinity_server(
                    model_dir, engine, threads, logs / f"infinity-{engine}.log"))
            except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
                print(f"Infinity ({engine}) did not start: {exc}; see "
                      f"{logs / f'infinity-{engine}.log'}", flush=True)
        times = asyncio.run(measure_peers(bases, texts, args.rounds, args.warmup, args.wide))
    load = os.getloadavg()
    n, wide = len(texts), args.wide
    counts = {"a": n, "b": n, "d": wide}
    labels = {"a": f"one request of {n}", "b": f"{n} one-sentence clients",
              "d": f"{wide} one-sentence clients"}
    summary = {target: {key: statistics.median(counts[key] / t for t in values)
                        for key, values in by_key.items()} for target, by_key in times.items()}
    print(f"\nEmbeddings side by side: bundled all-MiniLM-L6-v2, {cpu_name()}, "
          f"{os.cpu_count()} CPUs, threads {threads or 'default'}, {args.rounds} rounds "
          f"(median sentences/s), load average {load[0]:.2f}")
    print("| target | " + " | ".join(labels.values()) + " |")
    print("|---|" + "---:|" * len(labels))
    for target, rates in summary.items():
        print(f"| {target} | " + " | ".join(f"{rates[k]:.0f}" for k in labels) + " |")
    ratios = {}
    peer = next((t for t in summary if t.startswith("Infinity")), None)
    if peer:
        best_peer = {k: max(r[k] for t, r in summary.items() if t.startswith("Infinity"))
                     for k in labels}
        for target, rates in summary.items():
            if target.startswith("labs-api"):
                for key, label in labels.items():
                    ratios[f"{target} / best Infinity, {label}"] = rates[key] / best_peer[key]
        for name, value in ratios.items():
            print(f"{name}: {value:.2f}")
    out = RESULTS / "embeddings_peers.json"
    out.write_text(json.dumps({
        "benchmark": "embeddings_peers", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_name(), "cpus": os.cpu_count(), "threads": threads,
        "rounds": args.rounds, "load_average_at_end": load, "labels": labels,
        "sentences_per_s": summary, "ratios": ratios,
        "seconds": times}, indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first")
    parser.add_argument("--sentences", type=int, default=64, help="sentences per round")
    parser.add_argument("--no-httpx", action="store_true", help="skip the httpx row (b')")
    parser.add_argument("--peers", action="store_true", help="ours vs Infinity, interleaved")
    parser.add_argument("--backends", default="openvino,openvino-f32,onnx,torch",
                        help="--peers: our embedding backends to run")
    parser.add_argument("--infinity-engines", default="torch,optimum",
                        help="--peers: Infinity engines to run (empty: none)")
    parser.add_argument("--wide", type=int, default=256, help="--peers: clients of (d)")
    parser.add_argument("--threads", type=int, default=0,
                        help="--peers: embedding threads of every server (0: default)")
    args = parser.parse_args()
    if args.peers:
        if "--rounds" not in sys.argv:
            args.rounds = 5
        if "--warmup" not in sys.argv:
            args.warmup = 1
        peers(args)
        return

    RESULTS.mkdir(exist_ok=True)
    texts = sentences(args.sentences)
    engine, settings = load_engine()
    log_path = Path(tempfile.gettempdir()) / "labs-embeddings-throughput-server.log"
    with server(log_path) as base:
        times = asyncio.run(measure(base, engine, texts, args.rounds, args.warmup,
                                    with_httpx=not args.no_httpx))

    n = len(texts)
    labels = {"a": f"(a) one request of {n} sentences",
              "b": f"(b) {n} concurrent one-sentence requests",
              "c": f"(c) engine batch encode of {n} (no HTTP)",
              "b_httpx": "(b') as (b), through httpx.AsyncClient"}
    rows = {}
    for key, label in labels.items():
        if key not in times:
            continue
        rates = [n / t for t in times[key]]
        rows[key] = {"label": label, "median_sentences_per_s": statistics.median(rates),
                     "min_sentences_per_s": min(rates), "max_sentences_per_s": max(rates),
                     "median_seconds": statistics.median(times[key]), "seconds": times[key]}
    ratio_bc = rows["b"]["median_sentences_per_s"] / rows["c"]["median_sentences_per_s"]
    ratio_ac = rows["a"]["median_sentences_per_s"] / rows["c"]["median_sentences_per_s"]
    # Per round too: background load shifts all three of a round together.
    per_round = statistics.median(c / b for b, c in zip(times["b"], times["c"], strict=True))

    width = max(len(r["label"]) for r in rows.values())
    print(f"\nEmbedding throughput: {settings.embedding_model}, {args.rounds} rounds "
          f"(medians; min-max), {os.cpu_count()} CPUs, torch threads "
          f"{engine.torch.get_num_threads()}")
    print(f"| {'measurement'.ljust(width)} | sentences/s | min-max        | ms per round |")
    print(f"|{'-' * (width + 2)}|-------------|----------------|--------------|")
    for row in rows.values():
        spread = f"{row['min_sentences_per_s']:.0f}-{row['max_sentences_per_s']:.0f}"
        print(f"| {row['label'].ljust(width)} | {row['median_sentences_per_s']:11.0f} | "
              f"{spread:14} | {row['median_seconds'] * 1000:12.1f} |")
    print(f"\n(b)/(c) = {ratio_bc:.2f} (median of per-round ratios {per_round:.2f}); "
          f"(a)/(c) = {ratio_ac:.2f}")

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    result = {
        "benchmark": "embeddings_throughput",
        "when": stamp,
        "model": settings.embedding_model,
        "sentences_per_round": n,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "settings": {k: v for k, v in settings.model_dump().items()
                     if k.startswith("embedding_")},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "torch_threads": engine.torch.get_num_threads()},
        "results": rows,
        "ratio_b_over_c": ratio_bc,
        "ratio_b_over_c_per_round_median": per_round,
        "ratio_a_over_c": ratio_ac,
    }
    out = RESULTS / "embeddings_throughput.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
