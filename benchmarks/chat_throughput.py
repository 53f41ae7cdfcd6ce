"""Chat throughput on the bundled SmolLM2 GGUF: our server vs llama-cpp-python's server vs the
engine called directly, with 1, 4, 8 and 16 concurrent streaming clients; then chat decode
speed alone and while embedding and speech requests arrive.

    .venv/bin/python benchmarks/chat_throughput.py [--levels 1,4,8,16] [--max-tokens 128]

Prints tables and writes benchmarks/results/chat_throughput.json.

    .venv/bin/python benchmarks/chat_throughput.py --side-by-side [--rounds 2]

instead starts our server, llama.cpp's own C++ ``llama-server`` (built from the llama.cpp that
llama-cpp-python vendors, with our CPU flags, by benchmarks/peers/build-llama-server) and
llama-cpp-python's server together, all on the same GGUF with 8 slots, 2048 tokens each and the
same threads, and measures them interleaved (round by round, level by level, the order rotated)
with 64 tokens at 1, 8 and 16 clients, so background load hits them alike; writes
benchmarks/results/chat_side_by_side.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    cpu_name,
    free_port,
    labs_server,
    median,
    percentile,
    print_table,
    server_process,
    write_results,
)

from labs_api.engines.chat.base import ChatMessage, SamplingParams  # noqa: E402
from labs_api.engines.chat.factory import bundled_gguf_path  # noqa: E402
from labs_api.engines.chat.llama_cpp_engine import (  # noqa: E402
    LlamaCppChatEngine,
    LlamaCppOptions,
    default_thread_count,
)

TOPICS = ["the sea", "a forest", "the moon", "a city at night", "a mountain", "the desert",
          "a river", "winter", "a library", "a garden", "the sky", "a train", "a castle",
          "an island", "a storm", "a market"]


def prompt_for(client: int) -> str:
    return f"Write a long, detailed story about {TOPICS[client % len(TOPICS)]}."


@dataclass
class RequestTiming:
    ttft_s: float  # request sent -> first content
    latency_s: float  # request sent -> last byte
    tokens: int

    @property
    def decode_tok_s(self) -> float:
        span = self.latency_s - self.ttft_s
        return (self.tokens - 1) / span if span > 0 and self.tokens > 1 else float("nan")


@dataclass
class LevelResult:
    target: str
    clients: int
    aggregate_tok_s: float
    per_request_decode_tok_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    latency_p50_s: float
    latency_p95_s: float
    tokens: int


def summarise(target: str, clients: int, timings: list[RequestTiming],
              wall_s: float) -> LevelResult:
    ttfts = [t.ttft_s * 1000 for t in timings]
    latencies = [t.latency_s for t in timings]
    tokens = sum(t.tokens for t in timings)
    return LevelResult(target, clients, tokens / wall_s,
                       median([t.decode_tok_s for t in timings]),
                       percentile(ttfts, 50), percentile(ttfts, 95),
                       percentile(latencies, 50), percentile(latencies, 95), tokens)


async def stream_over_http(client: httpx.AsyncClient, url: str, model: str, prompt: str,
                           max_tokens: int) -> RequestTiming:
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": prompt}]}
    started = time.perf_counter()
    first = None
    pieces = 0
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                pieces += 1
                if first is None:
                    first = time.perf_counter()
    ended = time.perf_counter()
    # Both servers send one chunk per generated token (text held back for a stop sequence
    # or a split UTF-8 character is rare with these prompts).
    return RequestTiming((first or ended) - started, ended - started, pieces)


async def run_http_level(base: str, model: str, clients: int, max_tokens: int,
                         target: str, requests: int = 1) -> LevelResult:
    """``clients`` concurrent streams, each client sending ``requests`` one after another,
    each on a new connection (llama-server closes some after a stream: reusing them fails)."""
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=0)
    url = f"{base}/v1/chat/completions"

    async def one_client(i: int) -> list[RequestTiming]:
        return [await stream_over_http(client, url, model, prompt_for(i + clients * j),
                                       max_tokens) for j in range(requests)]

    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(i) for i in range(clients)))
        timings = [timing for client_timings in per_client for timing in client_timings]
        return summarise(target, clients, timings, time.perf_counter() - started)


async def run_engine_level(engine: LlamaCppChatEngine, clients: int,
                           max_tokens: int) -> LevelResult:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0)

    async def one(i: int) -> RequestTiming:
        started = time.perf_counter()
        first = None
        tokens = 0
        async for chunk in engine.stream([ChatMessage("user", prompt_for(i))], params):
            if chunk.text and first is None:
                first = time.perf_counter()
            if chunk.finish_reason:
                tokens = chunk.completion_tokens
        ended = time.perf_counter()
        return RequestTiming((first or ended) - started, ended - started, tokens)

    started = time.perf_counter()
    timings = await asyncio.gather(*(one(i) for i in range(clients)))
    return summarise("engine direct (no HTTP)", clients, list(timings),
                     time.perf_counter() - started)


@contextlib.contextmanager
def llama_cpp_python_server(threads: int, n_ctx: int):
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()),
               "--n_threads", str(threads), "--n_threads_batch", str(threads),
               "--n_ctx", str(n_ctx), "--host", "127.0.0.1", "--port", str(port),
               # its default cuts off a running stream when a new request arrives
               "--interrupt_requests", "False"]
    with server_process(command, {}, "/v1/models", port) as base:
        yield base


LLAMA_SERVER = "llama-server (C++)"
LLAMA_SERVER_KVU = "llama-server, unified KV"
LLAMA_SERVER_DEFAULT = "llama-server, its defaults"
PYTHON_SERVER = "llama_cpp.server"
OURS = "labs-api"
OURS_SPLIT = "labs-api, KV per slot"


def llama_server_binary(cmake_args: str | None = None) -> str:
    """The cached llama-server, built first if missing (about 8 min on 2 cores); with
    ``cmake_args``, one built with those flags instead of scripts/build-llama-cpp's."""
    script = Path(__file__).parent / "peers" / "build-llama-server"
    env = {**os.environ, "LABS_LLAMA_CMAKE_ARGS": cmake_args} if cmake_args else None
    return subprocess.run([str(script), sys.executable], check=True, capture_output=True,
                          text=True, env=env).stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def llama_cpp_server(threads: int, slots: int | None, n_ctx: int, unified: bool = False,
                     cmake_args: str | None = None, extra: tuple[str, ...] = ()):
    """llama.cpp's own server: ``-np slots -c slots*n_ctx -t threads``, as in issue 18;
    ``slots`` None: neither ``-np`` nor ``-c``, its own default (server.cpp: 4 slots in one
    unified KV pool of the model's trained context); ``unified``: ``-kvu``, one KV pool for
    all slots, as our default; ``cmake_args``: a binary built with other flags; ``extra``:
    more arguments (``--poll 0``)."""
    port = free_port()
    layout = ["-np", str(slots), "-c", str(slots * n_ctx)] if slots is not None else []
    command = [llama_server_binary(cmake_args), "-m", str(bundled_gguf_path()), *layout,
               "-t", str(threads), "-tb", str(threads), "--host", "127.0.0.1",
               "--port", str(port), *(["-kvu"] if unified else []), *extra]
    with server_process(command, {}, "/health", port) as base:
        yield base


def side_by_side(args: argparse.Namespace) -> None:
    """Ours, llama-server and llama-cpp-python's server, up together, measured interleaved."""
    levels = [int(x) for x in args.levels.split(",")]
    threads, slots, n_ctx = args.threads or default_thread_count(), 8, 2048
    results: dict[str, dict[int, list[LevelResult]]] = {}
    with contextlib.ExitStack() as stack:
        ours_env = {"LABS_PARALLEL": str(slots), "LABS_N_CTX": str(n_ctx),
                    "LABS_N_THREADS": str(threads), "LABS_PRELOAD_ON_START": "true"}
        bases = {OURS: stack.enter_context(labs_server(ours_env))}
        if args.split_kv:  # llama-server's own layout with -np 8: a KV stream per slot
            bases[OURS_SPLIT] = stack.enter_context(labs_server(
                {**ours_env, "LABS_KV_UNIFIED": "false"}))
        bases[LLAMA_SERVER] = stack.enter_context(llama_cpp_server(threads, slots, n_ctx))
        if args.peer_kvu:
            bases[LLAMA_SERVER_KVU] = stack.enter_context(llama_cpp_server(
                threads, slots, n_ctx, unified=True))
        if args.peer_default:  # no -np, no -c: what `llama-server -m model` runs
            bases[LLAMA_SERVER_DEFAULT] = stack.enter_context(llama_cpp_server(
                threads, None, n_ctx))
        if importlib.util.find_spec("sse_starlette") is not None:
            bases[PYTHON_SERVER] = stack.enter_context(llama_cpp_python_server(threads, n_ctx))
        models = {t: httpx.get(f"{b}/v1/models").json()["data"][0]["id"]
                  for t, b in bases.items()}
        targets = list(bases)
        for target in targets:  # warm-up: load, first kernels, our thread policy's trials
            asyncio.run(run_http_level(bases[target], models[target], 1, args.max_tokens,
                                       "warm-up"))
        for number in range(args.rounds):
            for clients in levels:
                shift = (number + clients) % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    if target == PYTHON_SERVER and clients > 8:
                        continue  # it serves one request at a time: 16 clients take minutes
                    time.sleep(args.gap)  # the previous target's idle threads may poll
                    result = asyncio.run(run_http_level(bases[target], models[target],
                                                        clients, args.max_tokens, target,
                                                        args.requests))
                    results.setdefault(target, {}).setdefault(clients, []).append(result)
                    print(f"  round {number + 1}, {clients} clients, {target}: "
                          f"{result.aggregate_tok_s:.1f} tok/s", flush=True)
    load = os.getloadavg()
    rows, summary = [], {}
    for target, by_level in results.items():
        for clients, runs in by_level.items():
            entry = {"aggregate_tok_s": median([r.aggregate_tok_s for r in runs]),
                     "ttft_p50_ms": median([r.ttft_p50_ms for r in runs]),
                     "ttft_p95_ms": median([r.ttft_p95_ms for r in runs]),
                     "rounds": [asdict(r) for r in runs]}
            summary.setdefault(target, {})[clients] = entry
            rows.append([target, clients, entry["aggregate_tok_s"],
                         " / ".join(f"{r.aggregate_tok_s:.1f}" for r in runs),
                         entry["ttft_p50_ms"], entry["ttft_p95_ms"]])
    print_table(f"Side by side, {cpu_name()}, {threads} threads, {slots} slots, "
                f"max_tokens={args.max_tokens}, temperature 0, load average "
                f"{load[0]:.2f}", ["target", "clients", "aggregate tok/s (median)",
                                   "per round", "TTFT p50 ms", "TTFT p95 ms"], rows)
    ratios = {}
    for clients in levels:
        for target, label, peer_name, versus in (
                (OURS, "our", LLAMA_SERVER, "llama-server"),
                (OURS_SPLIT, "our (KV per slot)", LLAMA_SERVER, "llama-server"),
                (OURS, "our", LLAMA_SERVER_KVU, "llama-server -kvu"),
                (OURS, "our default", LLAMA_SERVER_DEFAULT, "llama-server (its defaults)")):
            ours = summary.get(target, {}).get(clients)
            peer = summary.get(peer_name, {}).get(clients)
            if ours and peer:
                ratios[f"{clients} clients: {label} aggregate / {versus}"] = (
                    ours["aggregate_tok_s"] / peer["aggregate_tok_s"])
                ratios[f"{clients} clients: {label} TTFT p50 - {versus}'s (ms)"] = (
                    ours["ttft_p50_ms"] - peer["ttft_p50_ms"])
                # Paired: each round's ratio (both measured seconds apart), then the median;
                # on a noisy machine it moves less than a ratio of two medians.
                pairs = list(zip(ours["rounds"], peer["rounds"], strict=False))
                ratios[f"{clients} clients: {label} / {versus}, paired median"] = median(
                    [a["aggregate_tok_s"] / b["aggregate_tok_s"] for a, b in pairs])
                ratios[f"{clients} clients: {label} TTFT p50 - {versus}'s, paired median"] = (
                    median([a["ttft_p50_ms"] - b["ttft_p50_ms"] for a, b in pairs]))
    print_table("Ratios (issue 18's targets: >= 0.95, <= +10 ms)", ["comparison", "value"],
                [[k, v] for k, v in ratios.items()])
    write_results("chat_side_by_side", {
        "max_tokens": args.max_tokens, "threads": threads, "slots": slots, "n_ctx": n_ctx,
        "rounds": args.rounds, "requests_per_client": args.requests, "gap_s": args.gap,
        "load_average_at_end": load, "summary": summary,
        "ratios": ratios})


async def mixed_load(base: str, model: str, max_tokens: int, seconds: float) -> dict:
    """Chat decode speed of one stream alone, then while embedding and speech requests run."""
    async with httpx.AsyncClient(timeout=600) as client:
        paths = (await client.get(f"{base}/openapi.json")).json()["paths"]
        alone = await stream_over_http(client, f"{base}/v1/chat/completions", model,
                                       prompt_for(0), max_tokens)
        stop = asyncio.Event()
        counts = {"embedding_requests": 0, "speech_requests": 0}

        async def embed_loop() -> None:
            sentences = [f"Sentence number {i} about {TOPICS[i % 16]}." for i in range(32)]
            while not stop.is_set():
                r = await client.post(f"{base}/v1/embeddings", json={"input": sentences})
                r.raise_for_status()
                counts["embedding_requests"] += 1

        async def speech_loop() -> None:
            while not stop.is_set():
                r = await client.post(f"{base}/v1/tts",
                                      json={"text": "The quick brown fox jumps over the dog."})
                r.raise_for_status()
                counts["speech_requests"] += 1

        background = []
        if "/v1/embeddings" in paths:
            background.append(asyncio.create_task(embed_loop()))
        if "/v1/tts" in paths:
            background.append(asyncio.create_task(speech_loop()))
        await asyncio.sleep(1.0)
        loaded = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            loaded.append(await stream_over_http(client, f"{base}/v1/chat/completions", model,
                                                 prompt_for(len(loaded) + 1), max_tokens))
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
    under_load = median([t.decode_tok_s for t in loaded])
    return {"chat_decode_alone_tok_s": alone.decode_tok_s,
            "chat_decode_under_load_tok_s": under_load,
            "ratio": under_load / alone.decode_tok_s,
            "background": [p for p in ("/v1/embeddings", "/v1/tts") if p in paths],
            **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--mixed-seconds", type=float, default=20.0)
    parser.add_argument("--skip-peer", action="store_true", help="skip llama_cpp.server")
    parser.add_argument("--side-by-side", action="store_true",
                        help="ours vs llama-server vs llama_cpp.server, interleaved")
    parser.add_argument("--rounds", type=int, default=2, help="side-by-side rounds")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="side by side: idle seconds before each run (llama.cpp without "
                        "OpenMP polls for work ~100 ms after a graph at its default level)")
    parser.add_argument("--requests", type=int, default=1,
                        help="side by side: requests each client sends per round, one after "
                        "another (more: less noise at one client)")
    parser.add_argument("--peer-kvu", action="store_true",
                        help="side by side: also llama-server -kvu (one KV pool, as ours)")
    parser.add_argument("--peer-default", action="store_true",
                        help="side by side: also llama-server on its own defaults (no -np, "
                             "no -c: 4 slots, one KV pool of the model's context)")
    parser.add_argument("--split-kv", action="store_true",
                        help="side by side: also ours with LABS_KV_UNIFIED=false")
    parser.add_argument("--threads", type=int, default=0, help="side by side: threads (0: "
                        "one per core)")
    args = parser.parse_args()
    if args.side_by_side:
        if "--levels" not in sys.argv:
            args.levels = "1,8,16"
        if "--max-tokens" not in sys.argv:
            args.max_tokens = 64
        side_by_side(args)
        return
    levels = [int(x) for x in args.levels.split(",")]
    threads = default_thread_count()
    slots = max(8, max(levels) // 2)
    n_ctx = 2048
    results: list[LevelResult] = []

    print(f"engine direct: {slots} slots, {threads} threads", flush=True)
    engine = LlamaCppChatEngine("direct", bundled_gguf_path(), LlamaCppOptions(
        slots=slots, threads=threads, context_per_slot=n_ctx))
    asyncio.run(run_engine_level(engine, 1, 8))  # warm-up
    for clients in levels:
        results.append(asyncio.run(run_engine_level(engine, clients, args.max_tokens)))
        print(f"  {clients} clients done", flush=True)
    engine.close()

    mixed: dict[str, dict] = {}
    ipc: dict[str, float] = {}
    for target, workers in (("labs-api", "true"), (IN_PROCESS, "false")):
        print(f"our server ({target})", flush=True)
        with labs_server({"LABS_PARALLEL": str(slots), "LABS_N_CTX": str(n_ctx),
                          "LABS_ENGINE_WORKERS": workers}) as base:
            model = httpx.get(f"{base}/v1/models").json()["data"][0]["id"]
            asyncio.run(run_http_level(base, model, 1, 8, "warm-up"))
            for clients in levels:
                before = ipc_counts(base)
                results.append(asyncio.run(run_http_level(base, model, clients,
                                                          args.max_tokens, target)))
                after = ipc_counts(base)
                if workers == "true" and after[0] > before[0]:
                    ipc[f"{clients} clients: token events per message"] = (
                        (after[1] - before[1]) / (after[0] - before[0]))
                print(f"  {clients} clients done", flush=True)
            print("mixed load", flush=True)
            mixed[target] = asyncio.run(mixed_load(base, model, args.max_tokens,
                                                   args.mixed_seconds))

    if not args.skip_peer and importlib.util.find_spec("sse_starlette") is not None:
        print("llama-cpp-python's server (llama_cpp.server)", flush=True)
        with llama_cpp_python_server(threads, n_ctx) as base:
            model = httpx.get(f"{base}/v1/models").json()["data"][0]["id"]
            asyncio.run(run_http_level(base, model, 1, 8, "warm-up"))
            for clients in levels:
                results.append(asyncio.run(run_http_level(
                    base, model, clients, args.max_tokens, "llama_cpp.server")))
                print(f"  {clients} clients done", flush=True)
    elif not args.skip_peer:
        print("llama_cpp.server skipped: pip install 'llama-cpp-python[server]'")

    columns = ["target", "clients", "aggregate tok/s", "per-request decode tok/s",
               "TTFT p50 ms", "TTFT p95 ms", "latency p50 s", "latency p95 s"]
    rows = [[r.target, r.clients, r.aggregate_tok_s, r.per_request_decode_tok_s,
             r.ttft_p50_ms, r.ttft_p95_ms, r.latency_p50_s, r.latency_p95_s]
            for r in results]
    print_table(f"Streaming chat, max_tokens={args.max_tokens}, temperature 0, "
                f"{threads} threads", columns, rows)

    ratios = comparisons(results)
    print_table("Ratios", ["comparison", "value"], [[k, v] for k, v in ratios.items()])
    print_table("Engine worker messages (heartbeats excluded)", ["measure", "value"],
                [[k, v] for k, v in ipc.items()])
    for target, figures in mixed.items():
        print_table(f"Mixed load, {target} (one chat stream; embeddings and speech requests "
                    "in a loop)", ["measure", "value"], [[k, v] for k, v in figures.items()])
    write_results("chat_throughput", {
        "max_tokens": args.max_tokens, "threads": threads, "slots": slots,
        "levels": [asdict(r) for r in results], "ratios": ratios, "mixed_load": mixed,
        "ipc": ipc})


IN_PROCESS = "labs-api, engines in-process"


def ipc_counts(base: str) -> tuple[float, float]:
    """(messages, events) the chat worker has sent, from /metrics."""
    text = httpx.get(f"{base}/metrics").text
    found = {}
    for name in ("labs_engine_ipc_messages_total", "labs_engine_ipc_events_total"):
        found[name] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith(name) and 'kind="chat"' in line)
    return found["labs_engine_ipc_messages_total"], found["labs_engine_ipc_events_total"]


def comparisons(results: list[LevelResult]) -> dict[str, float]:
    def find(target: str, clients: int) -> LevelResult | None:
        return next((r for r in results if r.target == target and r.clients == clients), None)

    ratios: dict[str, float] = {}
    ours1, direct1 = find("labs-api", 1), find("engine direct (no HTTP)", 1)
    if ours1 and direct1:
        ratios["1 client: our decode / engine direct"] = (
            ours1.per_request_decode_tok_s / direct1.per_request_decode_tok_s)
        ratios["1 client: our TTFT - engine direct TTFT (ms)"] = (
            ours1.ttft_p50_ms - direct1.ttft_p50_ms)
    for clients in (1, 8, 16):
        ours, before = find("labs-api", clients), find(IN_PROCESS, clients)
        if ours and before:
            ratios[f"{clients} clients: aggregate, workers / in-process"] = (
                ours.aggregate_tok_s / before.aggregate_tok_s)
    ours8, peer8 = find("labs-api", 8), find("llama_cpp.server", 8)
    if ours8 and peer8:
        ratios["8 clients: our aggregate / llama_cpp.server"] = (
            ours8.aggregate_tok_s / peer8.aggregate_tok_s)
        ratios["8 clients: our TTFT p95 / llama_cpp.server"] = (
            ours8.ttft_p95_ms / peer8.ttft_p95_ms)
    return ratios


if __name__ == "__main__":
    main()
