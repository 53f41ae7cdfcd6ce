"""The ONNX Runtime embedding backend on the real bundled all-MiniLM-L6-v2 (and on a tiny
test-built BERT with its own prompts): the same vectors as torch, the export cache reused, a
damaged cache exported again, and a real server answering on it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from labs_api.engines.embedding.factory import bundled_embedding_path, load_embedding_engine
from labs_api.engines.embedding.onnx_engine import OnnxEmbeddingEngine
from labs_api.engines.embedding.onnx_export import MANIFEST_FILE, MODEL_FILE
from labs_api.engines.embedding.sentence_transformers_engine import SentenceTransformerEngine
from labs_api.settings import DEFAULT_EMBEDDING_MODEL, Settings
from tests.e2e.server import running_server
from tests.e2e.test_embeddings_hf_path import tiny_model_dir  # noqa: F401 - a fixture
from tests.openai_schema import assert_matches_openai

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello world",
    "x",
    "A dog is playing in the park",
    "Quarterly tax filing deadlines are in April, July, October and January.",
    "Ünïcödé — 東京 is a city; emoji 🙂 too",
    "a much longer text about the sea and the moon " * 60,  # over 256 tokens: truncated
    *[f"sentence {i} about {topic}" for i, topic in enumerate(["rivers", "trains", "owls"] * 8)],
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def bundled() -> str:
    return str(bundled_embedding_path())


@pytest.fixture(scope="module")
def torch_engine(bundled) -> SentenceTransformerEngine:
    return SentenceTransformerEngine("m", bundled, local_files_only=True, batch_size=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_engine(bundled, cache) -> OnnxEmbeddingEngine:
    return OnnxEmbeddingEngine("m", bundled, local_files_only=True, batch_size=8,
                               cache_dir=cache)


def test_fp32_export_gives_the_torch_vectors(torch_engine, onnx_engine):
    for task in ("document", "query", "similarity"):
        reference = torch_engine.embed(TEXTS, task)
        vectors = onnx_engine.embed(TEXTS, task)
        assert vectors.shape == reference.shape == (len(TEXTS), 384)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert cosines(vectors, reference).min() >= 0.99
    # and not trivially: different texts stay apart
    dog, taxes = onnx_engine.embed([TEXTS[2], TEXTS[3]], "document")
    assert float(dog @ taxes) < 0.5
    assert onnx_engine.dimensions == torch_engine.dimensions
    assert onnx_engine.max_input_tokens == torch_engine.max_input_tokens == 256
    assert onnx_engine.count_tokens(TEXTS, "document") == torch_engine.count_tokens(
        TEXTS, "document")


def test_the_order_of_inputs_is_kept_across_batches(onnx_engine):
    """Inputs are sorted by length inside; the rows come back in input order."""
    one_by_one = np.stack([onnx_engine.embed([text], "document")[0] for text in TEXTS[:12]])
    together = onnx_engine.embed(TEXTS[:12], "document")
    assert cosines(one_by_one, together).min() >= 0.9999


def test_a_second_load_reuses_the_export(bundled, cache, onnx_engine):
    assert onnx_engine.exported  # the fixture's engine made it
    made = onnx_engine.model_path.stat().st_mtime_ns
    again = OnnxEmbeddingEngine("m", bundled, local_files_only=True, cache_dir=cache)
    assert not again.exported
    assert again.model_path == onnx_engine.model_path
    assert again.model_path.stat().st_mtime_ns == made
    np.testing.assert_allclose(again.embed(TEXTS[:4], "document"),
                               onnx_engine.embed(TEXTS[:4], "document"), atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no-manifest"])
def test_a_damaged_cache_is_exported_again(bundled, torch_engine, tmp_path, damage):
    first = OnnxEmbeddingEngine("m", bundled, local_files_only=True, cache_dir=tmp_path)
    model = first.model_path
    first.close()
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "garbage":
        model.write_bytes(b"not an onnx file" * 1000)
    else:
        (model.parent / MANIFEST_FILE).unlink()
    second = OnnxEmbeddingEngine("m", bundled, local_files_only=True, cache_dir=tmp_path)
    assert second.exported
    assert json.loads((model.parent / MANIFEST_FILE).read_text())["variant"] == "fp32"
    vectors = second.embed(TEXTS[:6], "document")
    assert cosines(vectors, torch_engine.embed(TEXTS[:6], "document")).min() >= 0.99


def test_int8_is_its_own_export_and_stays_close(bundled, cache, torch_engine, onnx_engine):
    int8 = OnnxEmbeddingEngine("m", bundled, local_files_only=True, cache_dir=cache,
                               variant="int8")
    assert int8.model_path.parent != onnx_engine.model_path.parent
    assert int8.model_path.stat().st_size < onnx_engine.model_path.stat().st_size / 2
    similarity = cosines(int8.embed(TEXTS, "document"), torch_engine.embed(TEXTS, "document"))
    assert similarity.mean() >= 0.98 and similarity.min() >= 0.95, similarity


def test_a_model_with_its_own_prompts_matches_torch(tiny_model_dir, tmp_path):  # noqa: F811
    reference = SentenceTransformerEngine("tiny", str(tiny_model_dir), local_files_only=True)
    engine = OnnxEmbeddingEngine("tiny", str(tiny_model_dir), local_files_only=True,
                                 cache_dir=tmp_path)
    assert engine.prompts == reference.prompts and engine.prompts["query"]
    for task in ("query", "document"):
        assert cosines(engine.embed(TEXTS, task), reference.embed(TEXTS, task)).min() >= 0.99
    # the prompt changes the vector, as with torch
    assert cosines(engine.embed(["owls"], "query"), engine.embed(["owls"], "document"))[0] < 0.9999


def test_onnx_by_name_raises_where_the_default_falls_back_to_torch(monkeypatch):
    import labs_api.engines.embedding.factory as factory

    tried = []

    def broken(backend, *args, **kwargs):
        tried.append(backend)
        raise RuntimeError("no ONNX Runtime here")

    monkeypatch.setattr(factory, "_exported_engine", broken)
    engine = load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL, Settings())
    assert type(engine) is SentenceTransformerEngine  # the default: torch at last, with a log
    assert tried == ["openvino", "onnx"]
    with pytest.raises(RuntimeError, match="no ONNX Runtime here"):  # asked for by name
        load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL,
                              Settings(embedding_backend="onnx"))
    assert tried[-1] == "onnx"


def test_the_default_backend_with_bf16_is_torch_in_bf16():
    engine = load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL,
                                   Settings(embedding_dtype="bf16"))
    assert type(engine) is SentenceTransformerEngine
    assert str(engine.model.dtype) == "torch.bfloat16"


def test_the_onnx_backends_refuse_bf16_by_name():
    settings = Settings(embedding_backend="onnx", embedding_dtype="bf16")
    with pytest.raises(ValueError, match="LABS_EMBEDDING_DTYPE=bf16"):
        load_embedding_engine(DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_MODEL, settings)


def post_when_up(url: str, body: dict, wait_s: float = 600) -> httpx.Response:
    """POST once the server listens and has loaded the model (503 while it loads)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            response = httpx.post(url, json=body, timeout=wait_s)
            if response.status_code != 503 or time.monotonic() > deadline:
                return response
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_a_server_on_the_onnx_backend_answers_like_torch(tmp_path, torch_engine):
    env = {"LABS_EMBEDDING_BACKEND": "onnx", "LABS_PRELOAD_ON_START": "false",
           "XDG_CACHE_HOME": str(tmp_path), "LABS_EMBEDDING_TRUNCATE": "true"}
    with running_server(env, wait_ready=False) as url:  # only the embedding model loads
        for fmt in ("float", "base64"):
            response = post_when_up(f"{url}/v1/embeddings",
                                    {"input": TEXTS, "encoding_format": fmt})
            assert response.status_code == 200, response.text
            body = response.json()
            if fmt == "float":  # OpenAI's schema describes the float form only
                assert_matches_openai(body, "CreateEmbeddingResponse")
                vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
            else:
                import base64

                vectors = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4")
                                    for d in body["data"]])
            assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
            assert cosines(vectors, torch_engine.embed(TEXTS, "document")).min() >= 0.99
        similar = httpx.post(f"{url}/v1/similarities", timeout=120,
                             json={"sentences": TEXTS[:3]}).json()
        assert similar["shape"] == [3, 3]
        assert np.allclose(np.diag(similar["similarities"]), 1.0)
    assert list(tmp_path.glob(f"labs-api/onnx/*/{MODEL_FILE}"))  # the export went there


# ---- the fused export (LABS_EMBEDDING_ONNX_FUSED) ---------------------------------------------

@pytest.fixture(scope="module")
def fused_engine(bundled, cache) -> OnnxEmbeddingEngine:
    return OnnxEmbeddingEngine("m", bundled, local_files_only=True, batch_size=8,
                               cache_dir=cache, fused=True)


def test_the_fused_minilm_graph_holds_the_fused_ops(fused_engine, onnx_engine):
    from labs_api.engines.embedding.onnx_fusion import op_counts

    expected = {"Attention": 6, "SkipLayerNormalization": 12, "BiasGelu": 6}  # 6 layers
    assert op_counts(fused_engine.model_path) == expected
    assert fused_engine.fused_ops == expected
    assert json.loads((fused_engine.model_path.parent / MANIFEST_FILE).read_text())[
        "fused"] == expected
    assert fused_engine.model_path.parent != onnx_engine.model_path.parent  # its own cache
    assert op_counts(onnx_engine.model_path) == {}  # the default stays unfused


def test_the_fused_export_gives_the_torch_vectors(fused_engine, torch_engine):
    for task in ("document", "query", "similarity"):
        similarity = cosines(fused_engine.embed(TEXTS, task), torch_engine.embed(TEXTS, task))
        assert similarity.min() >= 0.9999, similarity  # fp32: only rounding differs


def test_an_export_the_optimizer_fails_on_loads_unfused(bundled, torch_engine, tmp_path,
                                                        monkeypatch):
    import onnxruntime.transformers.optimizer as optimizer

    def fails(*args, **kwargs):
        raise NotImplementedError("no fusion for this graph")

    monkeypatch.setattr(optimizer, "optimize_model", fails)
    engine = OnnxEmbeddingEngine("m", bundled, local_files_only=True, cache_dir=tmp_path,
                                 fused=True)
    assert engine.exported and engine.fused_ops == {}
    assert json.loads((engine.model_path.parent / MANIFEST_FILE).read_text())["fused"] is None
    similarity = cosines(engine.embed(TEXTS, "document"), torch_engine.embed(TEXTS, "document"))
    assert similarity.min() >= 0.9999


def test_wrong_heads_leave_attention_unfused_and_the_vectors_right(
        tiny_model_dir, tmp_path, monkeypatch):  # noqa: F811
    """The tiny BERT described as 4 heads (it has 2): the optimizer leaves attention alone and
    fuses only LayerNorm and GELU; the vectors stay torch's."""
    from labs_api.engines.embedding import onnx_fusion

    real = onnx_fusion.fuse

    def wrong_heads(plain, target, config, input_names, session):
        import copy

        config = copy.copy(config)
        config.num_attention_heads = 4
        return real(plain, target, config, input_names, session)

    monkeypatch.setattr(onnx_fusion, "fuse", wrong_heads)
    reference = SentenceTransformerEngine("tiny", str(tiny_model_dir), local_files_only=True)
    engine = OnnxEmbeddingEngine("tiny", str(tiny_model_dir), local_files_only=True,
                                 cache_dir=tmp_path, fused=True)
    assert "Attention" not in engine.fused_ops and engine.fused_ops
    assert cosines(engine.embed(TEXTS, "document"),
                   reference.embed(TEXTS, "document")).min() >= 0.9999


def test_a_fused_graph_with_other_outputs_is_not_kept(tiny_model_dir, tmp_path,  # noqa: F811
                                                      monkeypatch):
    """An optimizer that fuses but breaks the graph (here: a weight doubled): the probe sees
    the difference and the plain export is kept."""
    import onnxruntime.transformers.optimizer as optimizer
    from onnx import numpy_helper

    real = optimizer.optimize_model

    def breaks(*args, **kwargs):
        model = real(*args, **kwargs)
        weight = next(t for t in model.model.graph.initializer
                      if numpy_helper.to_array(t).size >= 1024)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2, weight.name))
        return model

    monkeypatch.setattr(optimizer, "optimize_model", breaks)
    reference = SentenceTransformerEngine("tiny", str(tiny_model_dir), local_files_only=True)
    engine = OnnxEmbeddingEngine("tiny", str(tiny_model_dir), local_files_only=True,
                                 cache_dir=tmp_path, fused=True)
    assert engine.fused_ops == {}
    assert cosines(engine.embed(TEXTS, "document"),
                   reference.embed(TEXTS, "document")).min() >= 0.9999


def test_the_tiny_bert_fuses_too(tiny_model_dir, tmp_path):  # noqa: F811
    reference = SentenceTransformerEngine("tiny", str(tiny_model_dir), local_files_only=True)
    engine = OnnxEmbeddingEngine("tiny", str(tiny_model_dir), local_files_only=True,
                                 cache_dir=tmp_path, fused=True)
    assert engine.fused_ops.get("Attention") == 2  # 2 layers
    for task in ("query", "document"):
        assert cosines(engine.embed(TEXTS, task), reference.embed(TEXTS, task)).min() >= 0.9999


def test_length_buckets_return_the_callers_order(onnx_engine):
    """Short and long inputs mixed: several calls of similar lengths, rows back in input
    order, the same vectors as one input at a time and as unbucketed calls."""
    from labs_api.engines.embedding.buckets import plan

    texts = [TEXTS[5], *TEXTS[:5], TEXTS[5][:400], *TEXTS[6:12]]
    lengths = [c.model for c in onnx_engine.count_tokens(texts, "document")]
    assert len(plan([min(n, 256) for n in lengths], onnx_engine.batch_size)) >= 3
    together = onnx_engine.embed(texts, "document")
    one_by_one = np.stack([onnx_engine.embed([text], "document")[0] for text in texts])
    assert cosines(one_by_one, together).min() >= 0.9999
    onnx_engine.bucketing = False
    try:
        unbucketed = onnx_engine.embed(texts, "document")
    finally:
        onnx_engine.bucketing = True
    assert cosines(unbucketed, together).min() >= 0.9999
