"""Fusing a BERT-like ONNX export's attention, LayerNorm and GELU into ONNX Runtime's own ops.

``onnxruntime.transformers.optimizer`` rewrites the exported graph's subgraphs into contrib ops
(``Attention``, ``SkipLayerNormalization``, ``BiasGelu``); it needs the export's eager attention
(the SDPA export's pattern is not recognised) and the model's head count and width. It matches
patterns, so it may fuse nothing, or only part, of a model it does not know: the result is kept
only if it runs and gives the plain graph's hidden states on a probe input; otherwise the caller
keeps the plain export.

Not fused: the embedding LayerNorm (``EmbedLayerNormalization``), which measured 10% slower on
a 2-core Xeon (Sapphire Rapids) with MiniLM.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("labs_api.embeddings")

#: The contrib ops a successful fusion leaves in the graph.
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu",
             "FastGelu", "Gelu")
#: Largest absolute difference of hidden states between the fused and plain graphs.
TOLERANCE = 1e-3


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each fused op type the ONNX file at ``path`` holds."""
    import onnx

    counts = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def shape_of(config: Any) -> tuple[int, int] | None:
    """(heads, hidden size) from a HuggingFace config, or None when it does not say."""
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(heads, int) or not isinstance(hidden, int) or heads < 1 or hidden < 1:
        return None
    return heads, hidden


def fuse(plain: Path, target: Path, config: Any, input_names: list[str],
         session: Any) -> dict[str, int] | None:
    """Write the fused graph of ``plain`` to ``target``; its fused op counts, or None (and no
    file) when the optimizer fails, fuses nothing, or changes the outputs.

    ``session`` opens an ONNX file as an ``InferenceSession`` (the engine's own options).
    """
    dims = shape_of(config)
    if dims is None:
        log.info("not fusing the ONNX export: the model config names no heads or hidden size")
        return None
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        options = FusionOptions("bert")
        options.enable_embed_layer_norm = False
        optimized = optimize_model(str(plain), model_type="bert", num_heads=dims[0],
                                   hidden_size=dims[1], optimization_options=options,
                                   opt_level=0, use_gpu=False)
        optimized.save_model_to_file(str(target))
        fused = op_counts(target)
        if not fused:
            raise ValueError("the optimizer fused nothing")
        vocab = getattr(config, "vocab_size", None) or 2000
        difference = largest_difference(session(plain), session(target),
                                        probe_feeds(input_names, vocab))
        if not difference <= TOLERANCE:
            raise ValueError(f"the fused graph's outputs differ by {difference:.2g}")
    except Exception as exc:  # the optimizer raises anything on graphs it does not expect
        log.warning("keeping the plain ONNX export (fusing failed: %s: %s)",
                    type(exc).__name__, exc)
        target.unlink(missing_ok=True)
        return None
    log.info("fused the ONNX export: %s (largest difference %.1g)", fused, difference)
    return fused


def probe_feeds(input_names: list[str], vocab: int) -> dict[str, np.ndarray]:
    """Two rows of 12 tokens, the second one half padding, as the tokenizer would give them."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, min(vocab, 2000), size=(2, 12), dtype=np.int64)
    mask = np.ones((2, 12), dtype=np.int64)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask,
             "token_type_ids": np.zeros((2, 12), dtype=np.int64)}
    return {name: feeds[name] for name in input_names}


def largest_difference(plain: Any, fused: Any, feeds: dict[str, np.ndarray]) -> float:
    """The largest absolute difference of the two sessions' hidden states on the unpadded
    positions of ``feeds``."""
    a = plain.run(None, feeds)[0]
    b = fused.run(None, feeds)[0]
    if a.shape != b.shape:
        return float("inf")
    kept = feeds.get("attention_mask", np.ones(a.shape[:2], dtype=np.int64)).astype(bool)
    return float(np.abs(a[kept] - b[kept]).max())
