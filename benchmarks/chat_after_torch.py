"""One chat stream before and after the first embedding request, with engines in workers and in
the server process (LABS_ENGINE_WORKERS=false).

In one process torch's own ``libgomp.so.1`` becomes the OpenMP runtime of an OpenMP-built
llama.cpp too; once torch's thread pool exists, libgomp barely spins at barriers and decoding
slows (README, Engine workers). This shows it, and that workers keep the chat engine clear of
it: with a llama.cpp built without OpenMP (``LABS_LLAMA_CMAKE_ARGS`` ending in
``-DGGML_OPENMP=OFF``) the in-process "after" row should match "before".

    .venv/bin/python benchmarks/chat_after_torch.py [--rounds 3]

Prints a table and writes benchmarks/results/chat_after_torch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from chat_throughput import run_http_level  # noqa: E402
from common import cpu_name, labs_server, median, print_table, write_results  # noqa: E402

MAX_TOKENS = 64
REQUESTS = 3  # per round, one after another


def stream_rate(base: str, model: str) -> float:
    return asyncio.run(run_http_level(base, model, 1, MAX_TOKENS, "one stream",
                                      REQUESTS)).aggregate_tok_s


def measure(workers: bool, rounds: int) -> dict[str, list[float]]:
    env = {"LABS_PARALLEL": "8", "LABS_N_THREADS": "2", "LABS_PRELOAD_ON_START": "true",
           "LABS_ENGINE_WORKERS": str(workers).lower()}
    with labs_server(env) as base:
        models = httpx.get(f"{base}/v1/models").json()["data"]
        chat = next(m["id"] for m in models if "SmolLM2" in m["id"])
        embedding = next(m["id"] for m in models if "MiniLM" in m["id"])
        stream_rate(base, chat)  # warm-up: first kernels, the thread policy's first trials
        before = [stream_rate(base, chat) for _ in range(rounds)]
        response = httpx.post(f"{base}/v1/embeddings", timeout=120, json={
            "model": embedding, "input": [f"sentence number {i}" for i in range(64)]})
        response.raise_for_status()
        after = [stream_rate(base, chat) for _ in range(rounds)]
    return {"before": before, "after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {label: measure(workers, args.rounds)
               for label, workers in (("engines in workers", True),
                                      ("engines in the server process", False))}
    rows = []
    for label, runs in results.items():
        before, after = median(runs["before"]), median(runs["after"])
        rows.append([label, before, after, after / before])
    print_table(f"One chat stream before and after the first embedding request, {cpu_name()}, "
                f"{MAX_TOKENS} tokens x {REQUESTS} per round, medians of {args.rounds} rounds, "
                f"load average {os.getloadavg()[0]:.2f}",
                ["target", "tok/s before", "tok/s after", "after / before"], rows)
    write_results("chat_after_torch", {"rounds": args.rounds, "max_tokens": MAX_TOKENS,
                                       "requests_per_round": REQUESTS, "runs": results})


if __name__ == "__main__":
    main()
