"""Time per greedy token on the bundled SmolLM2 GGUF: llama.cpp's greedy sampler chain
(``llama_sampler_sample``, which copies the whole vocabulary into a candidate array) against the
argmax the scheduler takes instead (``LlamaCppModel.greedy_token``), on the same logits.

    .venv/bin/python benchmarks/greedy_sampling.py [--calls 5000]

Prints a table and writes benchmarks/results/greedy_sampling.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name, median, print_table, write_results  # noqa: E402

from labs_api.engines.chat.base import SamplingParams  # noqa: E402
from labs_api.engines.chat.factory import bundled_gguf_path  # noqa: E402
from labs_api.engines.chat.llama_cpp_model import ContextShape, LlamaCppModel  # noqa: E402


def per_call_us(function: Callable[[], object], calls: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean time of ``calls`` calls, in microseconds."""
    function()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - started) / calls * 1e6)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    model = LlamaCppModel(bundled_gguf_path(), ContextShape(
        slots=1, context_per_slot=256, batch_tokens=256, threads=2, unified=False))
    try:
        prompt = model.tokenize("Write a long story about the sea.", add_bos=True)
        model.batch_clear()
        for position, token in enumerate(prompt):
            model.batch_add(token, position, 0, position == len(prompt) - 1)
        model.decode()
        index = len(prompt) - 1
        sampler = model.new_sampler(SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0), 0)
        chain = per_call_us(lambda: model.lib.llama_sampler_sample(sampler, model.ctx, index),
                            args.calls)
        argmax = per_call_us(lambda: model.greedy_token(index), args.calls)
        same = int(model.lib.llama_sampler_sample(sampler, model.ctx, index)) == \
            model.greedy_token(index)
        model.free_sampler(sampler)
    finally:
        model.close()
    print_table(f"Greedy token, bundled SmolLM2 ({model.n_vocab} tokens), {cpu_name()}",
                ["method", "us per token"],
                [["llama_sampler_sample (greedy chain)", chain],
                 ["greedy_token (argmax)", argmax], ["chain / argmax", chain / argmax]])
    print(f"same token: {same}")
    write_results("greedy_sampling", {"vocab": model.n_vocab, "calls": args.calls,
                                      "chain_us": chain, "argmax_us": argmax,
                                      "ratio": chain / argmax, "same_token": same})


if __name__ == "__main__":
    main()
