"""Exporting a sentence-transformers model's transformer to ONNX, once, into a local cache.

The export is made from the model already loaded from its directory (never the Hub), written
under ``~/.cache/labs-api/onnx/<key>/`` where the key hashes the model's path, the size and
modification time of its weight files, the versions of torch, transformers and onnxruntime, the
variant (fp32 or int8) and whether the graph is to be fused (``onnx_fusion.py``). A manifest
records the file's SHA-256 (and the fused op counts): a file that does not match it (a crash
mid-write, a disk error, a hand edit) or that ONNX Runtime cannot open is exported again
instead of being trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("labs_api.embeddings")

OnnxVariant = Literal["fp32", "int8"]
# Bump when the export itself changes (inputs, opset, quantisation). 2: eager attention.
EXPORT_FORMAT = 2
OPSET = 17
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/labs-api/onnx``, else ``~/.cache/labs-api/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "labs-api" / "onnx"


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__}


def _weights_fingerprint(model_dir: Path) -> list[tuple[str, int, int]]:
    """Name, size and mtime of every weight and config file: a changed model misses the cache."""
    names = ("*.safetensors", "*.bin", "config.json", "tokenizer.json")
    found = sorted({p for pattern in names for p in model_dir.rglob(pattern) if p.is_file()})
    return [(str(p.relative_to(model_dir)), p.stat().st_size, int(p.stat().st_mtime))
            for p in found]


def cache_key(source: str, variant: OnnxVariant, input_names: list[str],
              fused: bool = False) -> str:
    """The cache folder's name for this model (a directory, else a Hub id), these library
    versions, this variant and fusion."""
    model_dir = Path(source)
    local = model_dir.is_dir()
    identity = {
        "path": str(model_dir.resolve()) if local else source,
        "files": _weights_fingerprint(model_dir) if local else [],
        "versions": _versions(),
        "variant": variant,
        "fused": fused,
        "inputs": input_names,
        "format": EXPORT_FORMAT,
        "opset": OPSET,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:20]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_model(folder: Path, opens: Callable[[Path], bool]) -> Path | None:
    """The cached export in ``folder`` if its manifest matches it and ``opens`` accepts it."""
    model, manifest = folder / MODEL_FILE, folder / MANIFEST_FILE
    try:
        recorded = json.loads(manifest.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not model.is_file() or file_sha256(model) != recorded:
        log.warning("the cached ONNX export in %s is damaged: exporting again", folder)
        return None
    if not opens(model):
        log.warning("ONNX Runtime cannot open the cached export in %s: exporting again", folder)
        return None
    return model


class _LastHiddenState:
    """The transformer called with named inputs, returning only its token embeddings."""

    def __init__(self, auto_model: Any, input_names: list[str]) -> None:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = auto_model

            def forward(self, *inputs: Any) -> Any:
                out = self.inner(**dict(zip(input_names, inputs, strict=True)),
                                 return_dict=True)
                return out.last_hidden_state

        self.module = Wrapper().eval()


@contextlib.contextmanager
def eager_attention(auto_model: Any) -> Iterator[None]:
    """The model's attention as explicit MatMul/Softmax while exporting: ONNX Runtime's
    fusion recognises that pattern, not the one SDPA exports to."""
    config = getattr(auto_model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = getattr(auto_model, "set_attn_implementation", None)
    try:
        if switch is not None:
            switch("eager")
        elif config is not None:
            config._attn_implementation = "eager"
    except (ValueError, TypeError, AttributeError) as exc:  # a model without an eager path
        log.info("exporting with the model's own attention (%s)", exc)
    try:
        yield
    finally:
        if before is not None and getattr(config, "_attn_implementation", before) != before:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                if switch is not None:
                    switch(before)
                else:
                    config._attn_implementation = before


def export(auto_model: Any, input_names: list[str], folder: Path,
           variant: OnnxVariant, fuse_with: Callable[[Path, Path], dict | None] | None = None,
           ) -> Path:
    """Export ``auto_model`` (a HuggingFace encoder) to ``folder/model.onnx``, atomically;
    ``fuse_with(plain, target)`` (fp32 only) writes a fused graph or returns None to keep the
    plain one."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    wrapper = _LastHiddenState(auto_model, input_names).module
    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    fused = None
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        with torch.no_grad(), eager_attention(auto_model):
            torch.onnx.export(wrapper, sample, str(fp32), input_names=input_names,
                              output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=OPSET, dynamo=False)
        produced = fp32
        if variant == "fp32" and fuse_with is not None:
            candidate = Path(scratch) / "fused.onnx"
            fused = fuse_with(fp32, candidate)
            if fused is not None:
                produced = candidate
        if variant == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            produced = Path(scratch) / "int8.onnx"
            # Per-channel scales: per-tensor int8 left MiniLM at cosine 0.89 to the fp32 vectors.
            quantize_dynamic(str(fp32), str(produced), weight_type=QuantType.QInt8,
                             per_channel=True)
        digest = file_sha256(produced)
        target = folder / MODEL_FILE
        os.replace(produced, target)
        # The manifest last: a folder without one is never trusted.
        manifest = Path(scratch) / MANIFEST_FILE
        manifest.write_text(json.dumps({"sha256": digest, "variant": variant,
                                        "fused": fused, "inputs": input_names,
                                        **_versions()}))
        os.replace(manifest, folder / MANIFEST_FILE)
    log.info("exported the embedding model to ONNX (%s, %s) in %s", variant,
             f"fused {fused}" if fused else "not fused", folder)
    return target


def ensure_export(auto_model: Any, source: str, input_names: list[str],
                  variant: OnnxVariant, cache_dir: Path,
                  opens: Callable[[Path], bool],
                  fuse_with: Callable[[Path, Path], dict | None] | None = None,
                  ) -> tuple[Path, bool]:
    """The cached export, made first if missing or damaged; and whether it was made now.
    ``fuse_with`` given (fp32): the fused graph, or the plain one where fusing fails."""
    fused = variant == "fp32" and fuse_with is not None
    folder = cache_dir / cache_key(source, variant, input_names, fused)
    found = cached_model(folder, opens)
    if found is not None:
        return found, False
    with contextlib.suppress(FileNotFoundError):
        (folder / MANIFEST_FILE).unlink()
    return export(auto_model, input_names, folder, variant,
                  fuse_with if fused else None), True


def manifest_of(model: Path) -> dict[str, Any]:
    """The manifest beside a cached export (empty if unreadable)."""
    try:
        return json.loads((model.parent / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
