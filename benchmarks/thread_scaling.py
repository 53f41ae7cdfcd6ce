"""Thread scaling of the engines, called directly (no HTTP): chat (llama.cpp on the bundled
SmolLM2 GGUF) at LABS_N_THREADS 1 and 2 with 1 and 8 streams, and embeddings (bundled MiniLM,
torch, onnx and openvino) at LABS_EMBEDDING_THREADS 1 and 2, the settings interleaved round by
round so background load hits them alike. More threads than cores is not measured (it only
oversubscribes).

Chat is measured first, before torch is imported: torch ships its own ``libgomp.so.1``, the same
soname as the system's that llama.cpp's OpenMP build uses, so in one process both share one
OpenMP runtime. Once torch's thread pool exists there are more OpenMP threads than cores, and
libgomp then spins only ~100 times at each barrier before sleeping: llama.cpp's decode, which
crosses a barrier after every operation, fell to 0.6x (one stream, Xeon, 2 cores: 95 -> 55
tok/s). The server keeps each engine in its own process, so it never meets this there.

    .venv/bin/python benchmarks/thread_scaling.py [--threads 1,2] [--rounds 3]

Prints a table and writes benchmarks/results/thread_scaling.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name, median, print_table, write_results  # noqa: E402

from labs_api.engines.chat.base import ChatMessage, SamplingParams  # noqa: E402
from labs_api.engines.chat.factory import bundled_gguf_path  # noqa: E402
from labs_api.engines.chat.llama_cpp_engine import (  # noqa: E402
    LlamaCppChatEngine,
    LlamaCppOptions,
)
from labs_api.engines.embedding.factory import bundled_embedding_path  # noqa: E402

EMBED_CALLS = 5  # timed calls of 64 per setting and round (one is 30-200 ms: too noisy alone)
GREEDY = SamplingParams(max_tokens=64, temperature=0.0, top_p=1.0)
SENTENCES = [f"Sentence {i} is about {topic} and what happened there last week."
             for i, topic in enumerate(["the harbour", "a library", "the train", "owls"] * 16)]


def chat_rate(engine: LlamaCppChatEngine, streams: int) -> float:
    async def run() -> int:
        results = await asyncio.gather(*(engine.generate(
            [ChatMessage("user", f"Write a long story about topic number {i}.")], GREEDY)
            for i in range(streams)))
        return sum(r.completion_tokens for r in results)

    started = time.perf_counter()
    tokens = asyncio.run(run())
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    counts = [int(x) for x in args.threads.split(",")]
    samples: dict[tuple[str, int], list[float]] = {}
    chat = {n: LlamaCppChatEngine(f"chat-{n}", bundled_gguf_path(), LlamaCppOptions(
        slots=8, threads=n, context_per_slot=1024)) for n in counts}
    for target in chat.values():
        chat_rate(target, 1)  # warm-up, and the thread policy's first trials
    for number in range(args.rounds):
        for n in counts[number % 2:] + counts[:number % 2]:
            for streams in (1, 8):
                samples.setdefault((f"chat, {streams} streams (tok/s)", n), []).append(
                    chat_rate(chat[n], streams))
        print(f"  chat round {number + 1} of {args.rounds}", flush=True)
    for engine in chat.values():
        engine.close()

    import torch  # only now (see the module's docstring)

    from labs_api.engines.embedding.onnx_engine import OnnxEmbeddingEngine
    from labs_api.engines.embedding.openvino_engine import OpenvinoEmbeddingEngine
    from labs_api.engines.embedding.sentence_transformers_engine import (
        SentenceTransformerEngine,
    )

    model_dir = str(bundled_embedding_path())
    st = SentenceTransformerEngine("torch", model_dir, local_files_only=True)
    onnx = {n: OnnxEmbeddingEngine(f"onnx-{n}", model_dir, local_files_only=True, threads=n)
            for n in counts}
    openvino = {n: OpenvinoEmbeddingEngine(f"openvino-{n}", model_dir, local_files_only=True,
                                           threads=n) for n in counts}
    for number in range(args.rounds):
        for n in counts[number % 2:] + counts[:number % 2]:
            torch.set_num_threads(n)
            for name, engine in (("torch", st), ("onnx", onnx[n]),
                                 ("openvino", openvino[n])):
                engine.embed(SENTENCES, "document")  # this shape's first call prepares it
                started = time.perf_counter()
                for _ in range(EMBED_CALLS):
                    engine.embed(SENTENCES, "document")
                rate = EMBED_CALLS * len(SENTENCES) / (time.perf_counter() - started)
                samples.setdefault((f"embeddings {name}, batch of 64 (sentences/s)", n),
                                   []).append(rate)
        print(f"  embeddings round {number + 1} of {args.rounds}", flush=True)
    load = os.getloadavg()
    measures = sorted({m for m, _ in samples}, key=list(dict.fromkeys(m for m, _ in samples))
                      .index)
    rows = [[m, *(median(samples[(m, n)]) for n in counts)] for m in measures]
    print_table(f"Thread scaling, {cpu_name()}, {os.cpu_count()} CPUs, medians of "
                f"{args.rounds} rounds, load average {load[0]:.2f}",
                ["measure", *(f"{n} thread{'s' if n > 1 else ''}" for n in counts)], rows)
    write_results("thread_scaling", {
        "threads": counts, "rounds": args.rounds, "load_average_at_end": load,
        "medians": {m: {str(n): median(samples[(m, n)]) for n in counts} for m in measures},
        "samples": {f"{m} @ {n}": v for (m, n), v in samples.items()}})


if __name__ == "__main__":
    main()
