"""The HuggingFace path: a tiny random-weight BERT in sentence-transformers format, built and saved
by the test, served through ``LABS_EMBEDDING_MODEL=<directory>`` (no hub access)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from labs_api.engines.embedding.factory import bundled_embedding_path
from labs_api.engines.embedding.sentence_transformers_engine import SentenceTransformerEngine
from tests.e2e.server import running_server, wait_for_health

pytestmark = pytest.mark.slow

HIDDEN = 32
MAX_SEQ = 24
PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """BERT with 2 layers of width 32 and random weights, MiniLM's tokenizer, mean pooling,
    normalisation, and its own query/document prompts, saved as a sentence-transformers dir."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    try:  # sentence-transformers 6
        from sentence_transformers.base.modules import Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer

    root = tmp_path_factory.mktemp("tiny-bert")
    hf_dir, st_dir = root / "hf", root / "sentence-transformers"
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_embedding_path()))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=MAX_SEQ)
    model = SentenceTransformer(modules=[transformer, Pooling(HIDDEN, "mean"), Normalize()],
                                prompts=PROMPTS, device="cpu")
    model.save(str(st_dir))
    return st_dir


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("tiny-server") / "server.log"
    with running_server({"LABS_EMBEDDING_MODEL": str(tiny_model_dir)}, log_path=log) as url:
        yield url


def test_the_directory_is_served_under_its_path_as_id(tiny_server, tiny_model_dir):
    ids = [m["id"] for m in httpx.get(f"{tiny_server}/v1/models").json()["data"]]
    assert str(tiny_model_dir) in ids
    ready = httpx.get(f"{tiny_server}/ready").json()
    assert {"id": str(tiny_model_dir), "kind": "embedding", "state": "ready"}.items() <= next(
        m for m in ready["models"] if m["kind"] == "embedding").items()


def test_embeddings_come_from_the_tiny_model_with_its_size(tiny_server, tiny_model_dir):
    response = httpx.post(f"{tiny_server}/v1/embeddings",
                          json={"input": ["Hello world", "How are you?"],
                                "model": str(tiny_model_dir)}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    vectors = np.array([d["embedding"] for d in body["data"]])
    assert vectors.shape == (2, HIDDEN)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert body["model"] == str(tiny_model_dir)
    assert body["usage"]["prompt_tokens"] == 6  # the text's own tokens, not the prompt's


def test_the_models_own_prompts_are_used_documents_by_default(tiny_server, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    def served(**extra):
        body = httpx.post(f"{tiny_server}/v1/embeddings",
                          json={"input": "where is the cat", **extra}, timeout=60).json()
        return np.array(body["data"][0]["embedding"])

    reference = SentenceTransformer(str(tiny_model_dir), device="cpu")
    as_document = reference.encode(["passage: where is the cat"], normalize_embeddings=True,
                                   prompt="")[0]
    as_query = reference.encode(["query: where is the cat"], normalize_embeddings=True,
                                prompt="")[0]
    # The served vectors come from the default backend (an ONNX export run by OpenVINO), the
    # reference from torch: equal to a runtime's rounding, and far nearer their own prompt's.
    document, query = served(), served(input_type="query")
    print(f"\ncosine to reference {document @ as_document:.6f} / {query @ as_query:.6f}, "
          f"query to document {as_query @ as_document:.6f}")
    assert document @ as_document > 0.9999 and query @ as_query > 0.9999
    assert as_query @ as_document < 0.999
    assert document @ as_query < document @ as_document
    assert query @ as_document < query @ as_query


def test_past_the_models_max_length_the_input_is_refused(tiny_server):
    response = httpx.post(f"{tiny_server}/v1/embeddings",
                          json={"input": ["short", "word " * 40]}, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "input[1]"
    assert f"at most {MAX_SEQ}" in error["message"]


def test_similarities_on_the_tiny_model(tiny_server):
    body = httpx.post(f"{tiny_server}/v1/similarities",
                      json={"sentences": ["a b c", "a b d", "x y z"]}, timeout=60).json()
    matrix = np.array(body["similarities"])
    assert body["shape"] == [3, 3] and (matrix == matrix.T).all()
    assert (np.diag(matrix) == 1.0).all()


# ---- the engine itself on the same directory (no server) -----------------------------------


def test_engine_reads_size_limit_and_prompts_from_the_directory(tiny_model_dir):
    engine = SentenceTransformerEngine("tiny", str(tiny_model_dir), local_files_only=True)
    assert (engine.dimensions, engine.max_input_tokens) == (HIDDEN, MAX_SEQ)
    assert engine.prompts == {"query": "query: ", "document": "passage: ",
                              "similarity": "query: "}
    counts = engine.count_tokens(["Hello world", "word " * 40], "document")
    # "passage: " is 2 tokens ("passage", ":"), plus [CLS] and [SEP]
    assert [(c.text, c.model) for c in counts] == [(2, 6), (40, 44)]
    vectors = engine.embed(["Hello world", "word " * 40], "document")  # truncates by itself
    assert vectors.shape == (2, HIDDEN) and vectors.dtype == np.float32


def test_bf16_runs_and_returns_float32_unit_vectors(tiny_model_dir):
    import torch

    engine = SentenceTransformerEngine("tiny", str(tiny_model_dir), dtype="bf16",
                                       local_files_only=True)
    assert engine.model.dtype == torch.bfloat16
    vectors = engine.embed(["Hello world"], "query")
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)
    reference = SentenceTransformerEngine("tiny", str(tiny_model_dir), local_files_only=True)
    full = reference.embed(["Hello world"], "query")
    assert float(vectors[0] @ full[0]) > 0.99  # same model, lower precision


def test_fp16_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="fp32 or bf16"):
        SentenceTransformerEngine("tiny", str(tiny_model_dir), dtype="fp16")  # type: ignore


def test_with_truncation_on_the_server_embeds_long_inputs(tiny_model_dir, tmp_path):
    env = {"LABS_EMBEDDING_MODEL": str(tiny_model_dir), "LABS_EMBEDDING_TRUNCATE": "true",
           "LABS_PRELOAD_ON_START": "false"}
    with running_server(env, log_path=tmp_path / "server.log", wait_ready=False) as url:
        wait_for_health(url)
        response = httpx.post(f"{url}/v1/embeddings", json={"input": ["word " * 40, "word"]},
                              timeout=120)
    assert response.status_code == 200, response.text
    # 24 tokens read: [CLS] + "passage" + ":" + 20 words + [SEP]; usage counts the 20 words
    assert response.json()["usage"]["prompt_tokens"] == 20 + 1

