"""llama.cpp built without OpenMP gets ggml's threadpool attached for the context's life: its
threads exist while the model does and are gone after ``close``, decodes with fewer threads than
the pool has work, and greedy generations are the tokens ggml's per-graph pools give."""

from __future__ import annotations

import os

import pytest

from labs_api.engines.chat.base import SamplingParams
from labs_api.engines.chat.factory import bundled_gguf_path
from labs_api.engines.chat.llama_cpp_build import built_with_openmp, system_info
from labs_api.engines.chat.llama_cpp_model import ContextShape, LlamaCppModel
from labs_api.engines.chat.llama_threadpool import GgmlThreadpool

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, top_p=1.0)
PROMPT = "Write two sentences about the sea."
needs_pool_build = pytest.mark.skipif(built_with_openmp(system_info()),
                                      reason="this llama.cpp uses OpenMP, not ggml's pool")


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def load(threads: int = 2, poll: int = 0) -> LlamaCppModel:
    return LlamaCppModel(bundled_gguf_path(), ContextShape(
        slots=1, context_per_slot=256, batch_tokens=256, threads=threads, poll=poll))


def greedy_tokens(model: LlamaCppModel, count: int = 24) -> list[int]:
    model.forget(0)
    tokens = model.tokenize(PROMPT, add_bos=True)
    produced: list[int] = []
    position = 0
    for _ in range(count):
        model.batch_clear()
        for offset, token in enumerate(tokens):
            index = model.batch_add(token, position + offset, 0, offset == len(tokens) - 1)
        position += len(tokens)
        model.decode()
        tokens = [model.greedy_token(index)]
        produced += tokens
    return produced


def test_openmp_is_read_from_the_system_info_line():
    assert built_with_openmp("CPU : SSE3 = 1 | AVX2 = 1 | OPENMP = 1 | REPACK = 1 |")
    assert not built_with_openmp("CPU : SSE3 = 1 | AVX2 = 1 | REPACK = 1 |")


@needs_pool_build
def test_the_pool_lives_as_long_as_the_model():
    before = thread_count()
    model = load(threads=3)
    try:
        assert model.threadpool is not None and model.threadpool.threads == 3
        assert thread_count() == before + 2  # the decoding thread is the pool's third
    finally:
        model.close()
    assert thread_count() == before
    model.close()  # twice is harmless


@needs_pool_build
def test_a_poll_level_outside_0_to_100_is_refused():
    model = load()
    try:
        with pytest.raises(ValueError, match="poll"):
            GgmlThreadpool(model.lib.llama_cpp._lib, model.ctx, 2, 101)
    finally:
        model.close()


@needs_pool_build
def test_greedy_tokens_are_those_of_ggml_per_graph_pools():
    model = load(poll=0)
    try:
        pooled = greedy_tokens(model)
        model.set_threads(1)  # fewer threads than the pool has
        one_thread = greedy_tokens(model)
        model.set_threads(2)
        assert model.threadpool is not None
        model.threadpool.close()  # now ggml makes a pool for every graph, as without ours
        per_graph = greedy_tokens(model)
    finally:
        model.close()
    assert len(set(pooled)) > 5, pooled  # a real generation, not one repeated token
    assert pooled == per_graph
    assert one_thread == per_graph


@needs_pool_build
def test_a_polling_pool_gives_the_same_tokens():
    quiet, polling = load(poll=0), load(poll=100)
    try:
        assert greedy_tokens(quiet) == greedy_tokens(polling)
    finally:
        quiet.close()
        polling.close()
