"""Loading on demand, on the bundled GGUF served under three ids from a models file: time to
first token for a request to an unloaded model (cold: the worker starts and loads it) and to a
loaded one (warm); resident memory of the server's whole process tree with 0, 1, 2 and 3 chat
models loaded and after unloading them (each model's worker process ends).

    .venv/bin/python benchmarks/model_loading.py [--runs 3]

Prints tables and writes benchmarks/results/model_loading.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
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
from engine_isolation import server_pid  # noqa: E402

IDS = ("chat-1", "chat-2", "chat-3")
MODELS_FILE = "".join(f'[[models]]\nid = "{i}"\nkind = "chat"\n\n' for i in IDS)


def first_token_s(base: str, model: str) -> float:
    """Seconds from sending a streamed chat request to its first piece of text."""
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8, "temperature": 0, "stream": True}
    started = time.perf_counter()
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                return time.perf_counter() - started
    raise RuntimeError("no token arrived")


def unload(base: str, model: str) -> None:
    httpx.post(f"{base}/v1/models/{model}/unload", timeout=60).raise_for_status()
    deadline = time.monotonic() + 60
    while True:  # until its worker process has gone
        rows = {r["id"]: r for r in httpx.get(f"{base}/v1/status").json()["data"]}
        if rows[model]["state"] == "unloaded" and rows[model]["pid"] is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model} did not unload")
        time.sleep(0.1)


def settled_rss(pid: int) -> float:
    time.sleep(2.0)  # let exits and start-up garbage settle
    return process_tree_rss_mb(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold and warm requests each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "models.toml"
        path.write_text(MODELS_FILE)
        env = {"LABS_MODELS_FILE": str(path), "LABS_PRELOAD_ON_START": "false"}
        with labs_server(env) as base:
            pid = server_pid(base)
            cold, warm = [], []
            for _ in range(args.runs):
                cold.append(first_token_s(base, IDS[0]))
                warm.append(first_token_s(base, IDS[0]))
                unload(base, IDS[0])
            rss = [("no model loaded", settled_rss(pid))]
            for count, model in enumerate(IDS, start=1):
                first_token_s(base, model)
                rss.append((f"{count} chat model{'s' if count > 1 else ''} loaded",
                            settled_rss(pid)))
            for model in IDS:
                unload(base, model)
            rss.append(("after unloading all three", settled_rss(pid)))
    cpu = cpu_name()
    print(f"CPU: {cpu}")
    print_table("Time to first token, bundled SmolLM2 Q4_1 GGUF (median of runs)",
                ["request", "median s", "min s", "max s"],
                [["cold (model unloaded)", median(cold), min(cold), max(cold)],
                 ["warm (model loaded)", median(warm), min(warm), max(warm)]])
    print_table("Resident memory of the server's process tree", ["state", "RSS MB"],
                [[name, mb] for name, mb in rss])
    write_results("model_loading", {
        "cpu": cpu, "runs": args.runs,
        "ttft_s": {"cold": cold, "warm": warm,
                   "cold_median": median(cold), "warm_median": median(warm)},
        "rss_mb": dict(rss)})


if __name__ == "__main__":
    main()
