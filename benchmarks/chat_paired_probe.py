"""A quick paired comparison of our server (in one or more configurations) with llama.cpp's
``llama-server``: one request at a time, the servers taking turns (A B A B, the order reversed
every other pair), so each ratio compares two runs seconds apart. On a noisy machine it separates
a 1-2% change that a side-by-side table of medians cannot.

    .venv/bin/python benchmarks/chat_paired_probe.py [--pairs 40] [--max-tokens 64] [--clients 1]
        [--variant 'per slot={"LABS_KV_UNIFIED": "false"}'] [--peer-kvu]
        [--peer-variant 'poll 0={"cmake_args": "...", "args": ["--poll", "0"]}']

Each ``--variant NAME=JSON`` adds one of our servers with those environment variables (the
default variant, ``ours``, has none); ``--peer-kvu`` runs llama-server with ``-kvu``. Each
``--peer-variant NAME=JSON`` adds another llama-server, built with ``cmake_args`` (default: ours)
and given ``args``; the ratios stay against the default one. Prints the median of the paired
ratios (of aggregate tok/s, and of each request's decode rate after its first token, which leaves
the time to first token out) and writes benchmarks/results/chat_paired_probe.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from chat_throughput import llama_cpp_server, run_http_level  # noqa: E402
from common import cpu_name, labs_server, median, print_table, write_results  # noqa: E402

PEER = "llama-server"


def named_specs(specs: list[str]) -> dict[str, dict]:
    """``NAME=JSON`` arguments as ``{NAME: parsed JSON object}``."""
    return {name: json.loads(spec) for name, _, spec in (s.partition("=") for s in specs)}


def variants_of(specs: list[str]) -> dict[str, dict[str, str]]:
    return {"ours": {}, **{name: {k: str(v) for k, v in env.items()}
                           for name, env in named_specs(specs).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--gap", type=float, default=0.3,
                        help="idle seconds before each run: a llama.cpp built without OpenMP "
                        "polls for work after a graph (llama-server's default, poll 50: about "
                        "100 ms on a 2-core Xeon), which would steal a core from the next run")
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON env")
    parser.add_argument("--peer-kvu", action="store_true", help="llama-server with -kvu")
    parser.add_argument("--peer-variant", action="append", default=[],
                        help='NAME={"cmake_args": "...", "args": [...]}: another llama-server')
    args = parser.parse_args()
    slots, n_ctx, threads = 8, 2048, 2
    base_env = {"LABS_PARALLEL": str(slots), "LABS_N_CTX": str(n_ctx),
                "LABS_N_THREADS": str(threads), "LABS_PRELOAD_ON_START": "true"}
    with contextlib.ExitStack() as stack:
        bases = {name: stack.enter_context(labs_server({**base_env, **env}))
                 for name, env in variants_of(args.variant).items()}
        bases[PEER] = stack.enter_context(llama_cpp_server(threads, slots, n_ctx,
                                                           unified=args.peer_kvu))
        for name, spec in named_specs(args.peer_variant).items():
            bases[name] = stack.enter_context(llama_cpp_server(
                threads, slots, n_ctx, unified=args.peer_kvu,
                cmake_args=spec.get("cmake_args"), extra=tuple(spec.get("args", ()))))
        models = {t: httpx.get(f"{b}/v1/models").json()["data"][0]["id"]
                  for t, b in bases.items()}
        names = list(bases)
        for name in names:  # warm-up: load, first kernels, our thread policy's trials
            asyncio.run(run_http_level(bases[name], models[name], 1, args.max_tokens, name))
        runs: dict[str, list] = {name: [] for name in names}
        for pair in range(args.pairs):
            for name in names if pair % 2 == 0 else names[::-1]:
                time.sleep(args.gap)
                runs[name].append(asyncio.run(run_http_level(
                    bases[name], models[name], args.clients, args.max_tokens, name)))
    peer = runs[PEER]
    summary, rows = {}, []
    for name in names:
        pairs = list(zip(runs[name], peer, strict=True))
        ratio = median([a.aggregate_tok_s / b.aggregate_tok_s for a, b in pairs])
        decode = median([a.per_request_decode_tok_s / b.per_request_decode_tok_s
                         for a, b in pairs])
        ttft = median([a.ttft_p50_ms - b.ttft_p50_ms for a, b in pairs])
        tok_s = median([r.aggregate_tok_s for r in runs[name]])
        ttft_ms = median([r.ttft_p50_ms for r in runs[name]])
        summary[name] = {"tok_s_median": tok_s, "paired_ratio_median": ratio,
                         "paired_decode_ratio_median": decode, "ttft_ms_median": ttft_ms,
                         "ttft_diff_ms_median": ttft}
        rows.append([name, tok_s, ratio, decode, ttft_ms, ttft])
    load = os.getloadavg()[0]
    print_table(f"Paired probe, {cpu_name()}, {args.clients} client(s), {args.pairs} pairs, "
                f"max_tokens={args.max_tokens}, peer {PEER}{' -kvu' if args.peer_kvu else ''}, "
                f"load average {load:.2f}",
                ["target", "tok/s (median)", f"paired ratio / {PEER}",
                 "decode-rate ratio", "TTFT ms", "TTFT diff ms"], rows)
    write_results("chat_paired_probe", {
        "pairs": args.pairs, "max_tokens": args.max_tokens, "clients": args.clients,
        "gap_s": args.gap,
        "peer_kvu": args.peer_kvu, "variants": variants_of(args.variant),
        "peer_variants": named_specs(args.peer_variant),
        "load_average_at_end": load, "summary": summary})


if __name__ == "__main__":
    main()
