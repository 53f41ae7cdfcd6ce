"""The two KV-cache layouts of the llama.cpp engine, called directly (no HTTP): one cache shared
by all slots (``LABS_KV_UNIFIED=true``, the default) against a stream per slot (``false``), on
the bundled SmolLM2 GGUF with the server's other defaults (its prompt cache in host memory
included), interleaved round by round, with how many cells each step's attention spans.

llama.cpp pads a stream's attention span (``n_kv``) to the highest cell in use, rounded up to
256. In one shared cache that is every running sequence's cells together; in a stream per slot
only the sequence's own. The spans come from llama.cpp's own ``find_slot`` debug line
(``LLAMA_KV_CACHE_DEBUG=1``, set here), one line per sequence per decode step, logged through
the engine's native logger; both layouts pay that logging alike.

    .venv/bin/python benchmarks/kv_layout.py [--levels 1,8,16] [--rounds 3] [--max-tokens 64]

Prints a table and writes benchmarks/results/kv_layout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("LLAMA_KV_CACHE_DEBUG", "1")  # read when a context's cache is made

sys.path.insert(0, str(Path(__file__).parent))
from chat_throughput import run_engine_level  # noqa: E402
from common import cpu_name, median, print_table, write_results  # noqa: E402

from labs_api.engines.chat.factory import load_chat_engine  # noqa: E402
from labs_api.engines.chat.llama_cpp_engine import default_thread_count  # noqa: E402
from labs_api.settings import DEFAULT_CHAT_MODEL, Settings  # noqa: E402

SPAN_PAD = 256  # llama.cpp's minimum n_kv padding (llama_kv_cache::get_n_kv)
FIND_SLOT = re.compile(r"find_slot: stream\[\d+\], n = +(\d+),")
LAYOUTS = {"shared (default)": True, "per slot": False}


class SpanCounter(logging.Handler):
    """Counts the attention spans llama.cpp's find_slot debug lines report."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.spans: collections.Counter[int] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        match = FIND_SLOT.search(record.getMessage())
        if match:
            used = int(match.group(1))
            self.spans[max(SPAN_PAD, -(-used // SPAN_PAD) * SPAN_PAD)] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    threads, slots, n_ctx = default_thread_count(), 8, 2048

    counter = SpanCounter()
    native = logging.getLogger("labs_api.llama_cpp.native")
    native.addHandler(counter)
    native.setLevel(logging.DEBUG)
    native.propagate = False  # the debug lines are counted, not printed

    # The server's own chat engine and settings (its prompt cache included, which clears an
    # idle slot's cells from the shared cache), the layout the only difference.
    engines = {name: load_chat_engine(DEFAULT_CHAT_MODEL, name, Settings(
        parallel=slots, n_ctx=n_ctx, n_threads=threads, kv_unified=unified))
        for name, unified in LAYOUTS.items()}
    runs: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    spans: dict[tuple[str, int], collections.Counter[int]] = collections.defaultdict(
        collections.Counter)
    try:
        for engine in engines.values():
            asyncio.run(run_engine_level(engine, 1, 8))  # warm-up: load, first kernels
        for number in range(args.rounds):
            order = list(engines) if number % 2 == 0 else list(reversed(engines))
            for clients in levels:
                for name in order:
                    counter.spans.clear()
                    result = asyncio.run(run_engine_level(engines[name], clients,
                                                          args.max_tokens))
                    runs[name, clients].append(result.aggregate_tok_s)
                    spans[name, clients].update(counter.spans)
                    print(f"  round {number + 1}, {clients} clients, {name}: "
                          f"{result.aggregate_tok_s:.1f} tok/s", flush=True)
    finally:
        for engine in engines.values():
            engine.close()

    rows, summary = [], {}
    for (name, clients), rates in runs.items():
        histogram = dict(sorted(spans[name, clients].items()))
        summary.setdefault(name, {})[clients] = {
            "aggregate_tok_s": median(rates), "rounds": rates,
            "attention_span_cells": histogram}
        rows.append([name, clients, median(rates), " / ".join(f"{r:.1f}" for r in rates),
                     ", ".join(f"{cells}: {count}" for cells, count in histogram.items())])
    print_table(f"KV layouts, engine direct, {cpu_name()}, {threads} threads, {slots} slots "
                f"x {n_ctx}, max_tokens={args.max_tokens}, temperature 0",
                ["layout", "clients", "aggregate tok/s (median)", "per round",
                 "cells attended per sequence-step: count"], rows)
    shared, per_slot = LAYOUTS
    ratios = {f"{clients} clients: shared / per slot, paired median": median(
        [a / b for a, b in zip(runs[shared, clients], runs[per_slot, clients], strict=True)])
        for clients in levels}
    print_table("Ratios", ["comparison", "value"], [[k, v] for k, v in ratios.items()])
    write_results("kv_layout", {"threads": threads, "slots": slots, "n_ctx": n_ctx,
                                "max_tokens": args.max_tokens, "rounds": args.rounds,
                                "summary": summary, "ratios": ratios})


if __name__ == "__main__":
    main()
