"""Embeddings with the model's transformer on OpenVINO's CPU runtime.

The transformer is the same local ONNX export the ONNX Runtime backend makes and caches
(``onnx_export.py``); OpenVINO reads that file and compiles it for this CPU. Tokenizing, the
prompt, pooling and normalising stay sentence-transformers' own modules, as on ONNX Runtime.

Why it is the default: on a CPU with AMX or AVX512-BF16 OpenVINO runs the matrix products in
bfloat16 on those units (its own choice, ``precision="auto"``), about 3x ONNX Runtime's fp32 on a
2-core Xeon, with vectors at cosine >= 0.999 to torch's; on other CPUs (AVX2 only, ARM) it
runs fp32, about ONNX Runtime's speed. ``precision="f32"`` asks for fp32 everywhere.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labs_api.engines.embedding.onnx_engine import OnnxEmbeddingEngine
from labs_api.engines.optional import require

log = logging.getLogger("labs_api.embeddings")

EmbeddingPrecision = Literal["auto", "f32"]


class OpenvinoEmbeddingEngine(OnnxEmbeddingEngine):
    """A sentence-transformers model whose transformer runs on OpenVINO (CPU device)."""

    def __init__(self, model_id: str, source: str, *, precision: EmbeddingPrecision = "auto",
                 threads: int = 0, hf_token: str | None = None, local_files_only: bool = False,
                 batch_size: int = 64, cache_dir: Path | None = None) -> None:
        if precision not in ("auto", "f32"):
            raise ValueError(f"embedding precision must be auto or f32, not {precision!r}")
        self.ov = require("openvino")
        self.precision_hint = precision
        self._core = self.ov.Core()
        self._compiled: dict[Path, Any] = {}  # checked while loading, then kept
        self._lock = threading.Lock()  # one infer request, reused: one call at a time
        super().__init__(model_id, source, variant="fp32", threads=threads, hf_token=hf_token,
                         local_files_only=local_files_only, batch_size=batch_size,
                         cache_dir=cache_dir, fused=False)
        self._compiled = {}
        compiled = self.session
        self._request = compiled.create_infer_request()
        self._output = compiled.output(0)
        self.precision = self.precision_of(compiled)

    @staticmethod
    def precision_of(compiled: Any) -> str:
        """The precision OpenVINO runs the model's matrix products in ("bf16", "f32", ...)."""
        kind = compiled.get_property("INFERENCE_PRECISION_HINT")
        name = getattr(kind, "get_type_name", lambda: str(kind))()
        return {"bf16": "bf16", "f32": "f32", "f16": "f16"}.get(name, name)

    def runtime_description(self) -> str:
        threads = self.session.get_property("INFERENCE_NUM_THREADS")
        precision = self.precision_of(self.session)
        return (f"OpenVINO {self.ov.__version__.split('-')[0]} (CPU, {precision}, "
                f"{threads} threads)")

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",  # one stream: a call uses every thread it has
            "NUM_STREAMS": 1,
            # Not pinned: the chat model's threads share these cores.
            "ENABLE_CPU_PINNING": False,
        }
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.precision_hint == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        return config

    def _session(self, path: Path) -> Any:
        compiled = self._compiled.get(path)
        if compiled is None:
            compiled = self._core.compile_model(str(path), "CPU", self._config())
            self._compiled[path] = compiled
        return compiled

    def _opens(self, path: Path) -> bool:
        try:
            self._session(path)
        except Exception as exc:  # OpenVINO raises its own RuntimeError kinds
            log.warning("OpenVINO cannot compile %s: %s", path, exc)
            return False
        return True

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            self._request.infer(feeds, share_inputs=True)
            # A copy: the request's output buffer is overwritten by its next call.
            return np.array(self._request.get_tensor(self._output).data, dtype=np.float32)

    def close(self) -> None:
        self._request = None
        self._compiled = {}
        super().close()
