"""What engine worker processes cost and buy, on the bundled models: the time from killing a
worker (SIGSEGV) to the next answered request, per engine, and the resident memory of the whole
process tree at idle, with engines in workers and with engines in the server process.

    .venv/bin/python benchmarks/engine_isolation.py [--kills 3]

Prints tables and writes benchmarks/results/engine_isolation.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    cpu_name,
    labs_server,
    median,
    print_table,
    process_tree_rss_mb,
    write_results,
)

REQUESTS = {
    "chat": ("/v1/chat/completions", {"model": "SmolLM2-135M-Instruct", "max_tokens": 4,
                                      "messages": [{"role": "user", "content": "Hi"}]}),
    "embedding": ("/v1/embeddings", {"input": "hello world"}),
    "speech": ("/v1/tts", {"text": "Hello."}),
}


def server_pid(base: str) -> int:
    """The server's own pid: the parent of any engine worker, else the listening process."""
    models = httpx.get(f"{base}/ready").json()["models"]
    worker = next((m["pid"] for m in models if m.get("pid")), None)
    if worker is not None:
        return int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
    port = base.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():  # no workers: find python -m labs_api by its port
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"LABS_PORT={port}".encode() in environ.split(b"\0"):
                return int(entry.name)
    raise LookupError("server process not found")


def idle_rss(base: str) -> float:
    time.sleep(2.0)  # let start-up garbage settle
    return process_tree_rss_mb(server_pid(base))


def time_to_next_answer(base: str, kind: str) -> float:
    """Kill the kind's worker, then send its request every 50 ms until one is answered."""
    path, body = REQUESTS[kind]
    pid = next(m["pid"] for m in httpx.get(f"{base}/ready").json()["models"]
               if m["kind"] == kind)
    killed = time.perf_counter()
    os.kill(pid, signal.SIGSEGV)
    with httpx.Client(timeout=60) as client:
        while True:
            if client.post(f"{base}{path}", json=body).status_code == 200:
                return time.perf_counter() - killed
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    restarts: dict[str, list[float]] = {kind: [] for kind in REQUESTS}
    with labs_server({"LABS_ENGINE_WORKERS": "true"}) as base:
        workers_rss = idle_rss(base)
        for kind in REQUESTS:
            for _ in range(args.kills):
                restarts[kind].append(time_to_next_answer(base, kind))
                time.sleep(1.0)
            print(f"  {kind}: {restarts[kind]}", flush=True)
    with labs_server({"LABS_ENGINE_WORKERS": "false"}) as base:
        in_process_rss = idle_rss(base)

    rows = [[kind, median(times), max(times), len(times)] for kind, times in restarts.items()]
    print_table(f"Kill -SEGV of a worker -> next answered request, s ({cpu_name()})",
                ["engine", "median s", "max s", "kills"], rows)
    print_table("Resident memory of the process tree at idle, MB",
                ["setup", "RSS MB"],
                [["engines in worker processes", workers_rss],
                 ["engines in the server process", in_process_rss],
                 ["ratio", workers_rss / in_process_rss]])
    write_results("engine_isolation", {
        "restart_to_answer_s": restarts, "idle_rss_mb": {
            "workers": workers_rss, "in_process": in_process_rss}})


if __name__ == "__main__":
    main()
