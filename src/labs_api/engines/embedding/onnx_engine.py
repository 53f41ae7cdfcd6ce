"""Embeddings with the model's transformer on ONNX Runtime, the rest in sentence-transformers.

sentence-transformers' own ``backend="onnx"`` needs optimum-onnx, which pins transformers below
4.58 (older than the one installed), so the transformer is exported here with
``torch.onnx.export`` (``onnx_export.py``) and run by ONNX Runtime; tokenizing, the prompt,
pooling and normalising stay sentence-transformers' own modules, so the vectors are the torch
backend's up to rounding (tests check cosine >= 0.99).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labs_api.engines.embedding import buckets, onnx_fusion
from labs_api.engines.embedding.base import EmbeddingTask, normalize_rows
from labs_api.engines.embedding.onnx_export import (
    OnnxVariant,
    default_cache_dir,
    ensure_export,
    manifest_of,
)
from labs_api.engines.embedding.sentence_transformers_engine import SentenceTransformerEngine
from labs_api.engines.optional import require

log = logging.getLogger("labs_api.embeddings")

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def transformer_module(model: Any) -> Any:
    """The model's first module if it is a plain HuggingFace transformer, else a clear error
    (models that route by task, or start with something else, stay on torch)."""
    first = model[0]
    auto_model = getattr(first, "auto_model", None)
    output = getattr(first, "module_output_name", "token_embeddings")
    if auto_model is None or output != "token_embeddings":
        raise ValueError(
            f"the onnx embedding backend needs a model whose first module is a transformer, "
            f"not {type(first).__name__}; use LABS_EMBEDDING_BACKEND=torch for this model")
    return first


class OnnxEmbeddingEngine(SentenceTransformerEngine):
    """A sentence-transformers model whose transformer runs on ONNX Runtime (fp32 or int8);
    ``fused``: fp32 with attention, LayerNorm and GELU fused where the graph allows."""

    def __init__(self, model_id: str, source: str, *, variant: OnnxVariant = "fp32",
                 threads: int = 0, hf_token: str | None = None, local_files_only: bool = False,
                 batch_size: int = 64, cache_dir: Path | None = None,
                 fused: bool = False) -> None:
        super().__init__(model_id, source, dtype="fp32", threads=threads, hf_token=hf_token,
                         local_files_only=local_files_only, batch_size=batch_size)
        self.ort = require("onnxruntime")
        self.variant = variant
        transformer = transformer_module(self.model)
        probe = self._features(["probe"], "")
        self.input_names = [name for name in MODEL_INPUTS if name in probe]
        fuse_with = None
        if fused:
            fuse_with = functools.partial(self._fuse, config=transformer.auto_model.config)
        self.model_path, self.exported = ensure_export(
            transformer.auto_model, source, self.input_names, variant,
            cache_dir or default_cache_dir(), self._opens, fuse_with)
        self.fused_ops: dict[str, int] = manifest_of(self.model_path).get("fused") or {}
        self.session = self._session(self.model_path)
        # The torch weights are not needed any more: keep the module's shape, free its memory.
        transformer.auto_model.to("meta")
        self.after_transformer = list(self.model)[1:]  # pooling, dense, normalise...
        self.bucketing = True  # off: each call padded to the batch's longest (benchmarks)
        self.call_overhead = buckets.CALL_OVERHEAD_TOKENS
        log.info("embedding model %s on %s (%s)", model_id, self.runtime_description(),
                 "exported now" if self.exported else "export from the cache")

    def runtime_description(self) -> str:
        """What runs the transformer, for the load log line."""
        fused = f"fused {self.fused_ops}" if self.fused_ops else "not fused"
        return f"ONNX Runtime {self.ort.__version__} ({self.variant}, {fused})"

    def _fuse(self, plain: Path, target: Path, *, config: Any) -> dict[str, int] | None:
        return onnx_fusion.fuse(plain, target, config, self.input_names, self._session)

    def _session(self, path: Path) -> Any:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads  # 0: ONNX Runtime's default, one per core
        options.inter_op_num_threads = 1
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: the chat engine wants the cores between calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return self.ort.InferenceSession(str(path), sess_options=options,
                                         providers=["CPUExecutionProvider"])

    def _opens(self, path: Path) -> bool:
        try:
            self._session(path)
        except Exception as exc:  # onnxruntime raises its own exception types
            log.warning("cannot open %s: %s", path, exc)
            return False
        return True

    def embed(self, texts: Sequence[str], task: EmbeddingTask) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        torch = self.torch
        # One tokenizer call for all, then calls of similar lengths (``buckets.py``), each
        # padded only to its own longest input.
        features = self._features(list(texts), self.prompts[task])
        mask = features["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        if self.bucketing:
            calls = buckets.plan(lengths, self.batch_size, self.call_overhead)
        else:  # batch_size at a time in order of length, each padded to its longest
            order = np.argsort(-np.asarray(lengths), kind="stable")
            calls = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        with torch.inference_mode():
            for rows in calls:
                part = buckets.take(features, rows, int(max(lengths[i] for i in rows)), left)
                out[rows] = self._run(part)
        return normalize_rows(out)

    def _run(self, features: dict[str, Any]) -> np.ndarray:
        """One model call on tokenized inputs: the transformer on ONNX Runtime, then pooling
        and the rest in torch."""
        feeds = {name: features[name].numpy().astype(np.int64, copy=False)
                 for name in self.input_names}
        features["token_embeddings"] = self.torch.from_numpy(self._infer(feeds))
        for module in self.after_transformer:
            features = module(features)
        return features["sentence_embedding"].float().numpy()

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The transformer's last hidden state for these int64 inputs."""
        return self.session.run(["last_hidden_state"], feeds)[0]

    def _features(self, texts: list[str], prompt: str) -> dict[str, Any]:
        """Token ids and masks (and the prompt's length, for pooling that leaves it out), as
        sentence-transformers' own encode makes them."""
        preprocess = getattr(self.model, "preprocess", None)
        if preprocess is not None:  # sentence-transformers 6
            return preprocess(texts, prompt=prompt or None)
        features = self.model.tokenize([prompt + text for text in texts])
        if prompt:
            features["prompt_length"] = self.model.tokenize([prompt])["input_ids"].shape[-1] - 1
        return features

    def close(self) -> None:
        self.session = None
        super().close()
