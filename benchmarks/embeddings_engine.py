"""Embedding engines on the ONNX export, in process, no HTTP: sentences per second of
``embed`` on one batch, for engine variants measured interleaved (every round runs every
variant, the order rotated), so that background load hits them alike. Report the ratios;
absolute figures move with load.

Variants: ``plain`` (the unfused fp32 export, one padded run per batch), ``fused`` (attention,
LayerNorm and GELU fused), ``plain-nobucket`` / ``fused-nobucket`` (length buckets off: the whole
batch padded to its longest input), ``plain-o256`` (buckets planned with a call overhead of
256 token positions), ``openvino`` / ``openvino-f32`` (the plain export on OpenVINO, in its
own precision for this CPU / in f32). Workloads: ``short`` (64 sentences of 8-16 words),
``one-long`` (63 of them and one of ~250 tokens), ``spread`` (64 texts of 6 to 53 words).

    .venv/bin/python benchmarks/embeddings_engine.py [--rounds 10] [--variants plain,openvino]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import cpu_name  # benchmarks/common.py (the script's own folder)
from embeddings_throughput import sentences


def workloads(n: int) -> dict[str, list[str]]:
    short = sentences(n)
    long_text = " ".join(sentences(24))  # about 250 tokens
    words = " ".join(short).split()
    spread = [" ".join(words[i:i + 6 + i % 48]) for i in range(n)]  # ~8 to ~60 tokens
    return {"short": short, "one-long": [*short[:n - 1], long_text], "spread": spread}


def load(variant: str, cache: Path, threads: int):
    from labs_api.engines.embedding.factory import bundled_embedding_path
    from labs_api.engines.embedding.onnx_engine import OnnxEmbeddingEngine
    from labs_api.engines.embedding.openvino_engine import OpenvinoEmbeddingEngine

    if variant.startswith("openvino"):
        engine = OpenvinoEmbeddingEngine(
            variant, str(bundled_embedding_path()), local_files_only=True, cache_dir=cache,
            threads=threads, precision="f32" if variant.endswith("-f32") else "auto")
        engine.embed(["warm up"], "document")
        return engine
    engine = OnnxEmbeddingEngine(variant, str(bundled_embedding_path()), local_files_only=True,
                                 cache_dir=cache, threads=threads,
                                 fused=variant.startswith("fused"))
    if variant.endswith("-nobucket"):
        engine.bucketing = False
    elif "-o" in variant:  # e.g. plain-o256: buckets planned with a call overhead of 256
        engine.call_overhead = int(variant.rsplit("-o", 1)[1])
    engine.embed(["warm up"], "document")
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--variants", default="plain,openvino,openvino-f32")
    parser.add_argument("--threads", type=int, default=0, help="0: one per core")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="labs-onnx-bench-"))
    names = args.variants.split(",")
    engines = {name: load(name, cache, args.threads) for name in names}
    loads = workloads(args.sentences)
    times: dict[tuple[str, str], list[float]] = {(v, w): [] for v in names for w in loads}
    for number in range(args.rounds + 1):  # the first round is a warm-up
        shift = number % len(names)
        for workload, texts in loads.items():
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                engines[name].embed(texts, "document")
                if number:
                    times[name, workload].append(time.perf_counter() - started)
    print(f"Embedding engines, bundled all-MiniLM-L6-v2, {cpu_name()}, {os.cpu_count()} CPUs, "
          f"threads {args.threads or 'default'}, {args.rounds} rounds, load average "
          f"{os.getloadavg()[0]:.2f}; median sentences/s (ratio to {names[0]})")
    print("| variant | " + " | ".join(loads) + " |")
    print("|---|" + "---:|" * len(loads))
    for name in names:
        cells = []
        for workload, texts in loads.items():
            rate = len(texts) / statistics.median(times[name, workload])
            base = len(texts) / statistics.median(times[names[0], workload])
            cells.append(f"{rate:.0f} ({rate / base:.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
