"""llama-server's host-memory prompt cache, on and off: 16 streaming clients, then 8 on
prompts the 16 used (no slot holds them any more), twice each, interleaved. Shows what
``--cache-ram`` (8192 MiB by default) does to its time to first token.

    .venv/bin/python benchmarks/llama_server_prompt_cache.py

Prints a table and writes benchmarks/results/llama_server_prompt_cache.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import chat_throughput as chat  # noqa: E402
from common import cpu_name, free_port, print_table, server_process, write_results  # noqa: E402

from labs_api.engines.chat.factory import bundled_gguf_path  # noqa: E402


@contextlib.contextmanager
def llama_server(extra: list[str]):
    port = free_port()
    command = [chat.llama_server_binary(), "-m", str(bundled_gguf_path()), "-np", "8",
               "-c", "16384", "-t", "2", "-tb", "2", "--host", "127.0.0.1",
               "--port", str(port), *extra]
    with server_process(command, {}, "/health", port) as base:
        yield base


def main() -> None:
    rows, results = [], {}
    with llama_server([]) as default, llama_server(["--cache-ram", "0"]) as off:
        for _ in range(2):
            for name, base in (("--cache-ram 8192 (default)", default), ("--cache-ram 0", off)):
                asyncio.run(chat.run_http_level(base, "m", 16, 64, name))
                level = asyncio.run(chat.run_http_level(base, "m", 8, 64, name))
                results.setdefault(name, []).append(
                    {"aggregate_tok_s": level.aggregate_tok_s, "ttft_p50_ms": level.ttft_p50_ms})
                rows.append([name, level.aggregate_tok_s, level.ttft_p50_ms])
    print_table(f"llama-server, 8 clients after 16, {cpu_name()}",
                ["server", "aggregate tok/s", "TTFT p50 ms"], rows)
    write_results("llama_server_prompt_cache", {"rounds": results})


if __name__ == "__main__":
    main()
