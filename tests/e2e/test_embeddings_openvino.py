"""The OpenVINO embedding backend (the default) on the real bundled all-MiniLM-L6-v2 and on a tiny
test-built BERT with its own prompts: torch's vectors in the precision this CPU runs (bf16 where
AMX or AVX512-BF16 is present), ONNX Runtime's in f32, the callers' order, the fallback chain
when OpenVINO cannot be imported, and a server answering on it."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from labs_api.engines.embedding.factory import bundled_embedding_path, load_embedding_engine
from labs_api.engines.embedding.onnx_engine import OnnxEmbeddingEngine
from labs_api.engines.embedding.openvino_engine import OpenvinoEmbeddingEngine
from labs_api.engines.embedding.sentence_transformers_engine import SentenceTransformerEngine
from labs_api.engines.optional import MissingBackendError
from labs_api.settings import DEFAULT_EMBEDDING_MODEL, Settings
from tests.e2e.test_embeddings_hf_path import tiny_model_dir  # noqa: F401 - a fixture
from tests.e2e.test_embeddings_onnx import TEXTS, cosines

pytestmark = pytest.mark.slow


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.fixture(scope="module")
def bundled() -> str:
    return str(bundled_embedding_path())


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def torch_engine(bundled) -> SentenceTransformerEngine:
    return SentenceTransformerEngine("m", bundled, local_files_only=True, batch_size=8)


@pytest.fixture(scope="module")
def ov_engine(bundled, cache) -> OpenvinoEmbeddingEngine:
    return OpenvinoEmbeddingEngine("m", bundled, local_files_only=True, batch_size=8,
                                   cache_dir=cache)


@pytest.fixture(scope="module")
def ov_f32(bundled, cache) -> OpenvinoEmbeddingEngine:
    return OpenvinoEmbeddingEngine("m", bundled, local_files_only=True, batch_size=8,
                                   cache_dir=cache, precision="f32")


def test_auto_precision_gives_the_torch_vectors(torch_engine, ov_engine):
    for task in ("document", "query", "similarity"):
        reference = torch_engine.embed(TEXTS, task)  # unicode, and one over 256 tokens
        vectors = ov_engine.embed(TEXTS, task)
        assert vectors.shape == reference.shape == (len(TEXTS), 384)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert cosines(vectors, reference).min() >= 0.999, ov_engine.precision
    dog, taxes = ov_engine.embed([TEXTS[2], TEXTS[3]], "document")
    assert float(dog @ taxes) < 0.5  # different texts stay apart
    assert ov_engine.max_input_tokens == torch_engine.max_input_tokens == 256
    assert ov_engine.count_tokens(TEXTS, "document") == torch_engine.count_tokens(
        TEXTS, "document")


def test_the_precision_is_the_one_this_cpu_runs(ov_engine, ov_f32):
    assert ov_f32.precision == "f32"
    if platform.machine() in ("x86_64", "AMD64"):
        flags = cpu_flags()
        native_bf16 = bool(flags & {"amx_bf16", "avx512_bf16"})
        assert ov_engine.precision == ("bf16" if native_bf16 else "f32"), sorted(
            f for f in flags if "512" in f or "amx" in f)
    else:  # ARM: f32, or f16 where the CPU computes in it
        assert ov_engine.precision in ("f32", "f16")


def test_f32_matches_onnx_runtime(bundled, cache, ov_f32):
    onnx = OnnxEmbeddingEngine("m", bundled, local_files_only=True, batch_size=8,
                               cache_dir=cache)
    assert onnx.model_path == ov_f32.model_path  # one export, two runtimes
    assert cosines(ov_f32.embed(TEXTS, "document"), onnx.embed(TEXTS, "document")).min() \
        >= 0.99999


def test_the_callers_order_is_kept(ov_engine):
    """Rows come back in input order whatever the length buckets and batch sizes."""
    order = np.random.default_rng(7).permutation(len(TEXTS))
    shuffled = [TEXTS[i] for i in order]
    one_by_one = np.stack([ov_engine.embed([text], "document")[0] for text in shuffled])
    together = ov_engine.embed(shuffled, "document")
    assert cosines(one_by_one, together).min() >= 0.999
    # and each row is its own text's, not a neighbour's
    plain = ov_engine.embed(TEXTS, "document")
    np.testing.assert_allclose(together, plain[order], atol=2e-3)


def test_a_model_with_its_own_prompts_matches_torch(tiny_model_dir, tmp_path):  # noqa: F811
    reference = SentenceTransformerEngine("tiny", str(tiny_model_dir), local_files_only=True)
    engine = OpenvinoEmbeddingEngine("tiny", str(tiny_model_dir), local_files_only=True,
                                     cache_dir=tmp_path)
    assert engine.prompts == reference.prompts and engine.prompts["query"]
    for task in ("query", "document"):
        assert cosines(engine.embed(TEXTS, task), reference.embed(TEXTS, task)).min() >= 0.99
    assert cosines(engine.embed(["owls"], "query"), engine.embed(["owls"], "document"))[0] < 0.9999


def test_openvino_is_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert Settings().embedding_backend == "openvino"
    engine = load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL, Settings())
    assert type(engine) is OpenvinoEmbeddingEngine
    assert list(tmp_path.glob("labs-api/onnx/*/model.onnx"))  # its export went to the cache


def test_without_openvino_the_default_falls_back_to_onnx(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino: ImportError
    with caplog.at_level("WARNING", logger="labs_api.embeddings"):
        engine = load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL,
                                       Settings())
    assert type(engine) is OnnxEmbeddingEngine
    assert "openvino embedding backend is not available" in caplog.text
    assert "pip install openvino" in caplog.text  # it says how to get it back
    with pytest.raises(MissingBackendError, match="openvino"):  # asked for by name
        load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL,
                              Settings(embedding_backend="openvino"))


def test_without_openvino_and_onnx_runtime_the_default_is_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    engine = load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL, Settings())
    assert type(engine) is SentenceTransformerEngine


def test_precision_and_dtype_are_checked():
    with pytest.raises(ValidationError, match="embedding_precision"):
        Settings(embedding_precision="bf16")
    with pytest.raises(ValueError, match="LABS_EMBEDDING_PRECISION"):
        load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL,
                              Settings(embedding_backend="openvino", embedding_dtype="bf16"))
    with pytest.raises(ValueError, match="auto or f32"):
        OpenvinoEmbeddingEngine("m", "unused", precision="f16")  # type: ignore[arg-type]
