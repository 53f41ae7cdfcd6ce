"""Exporting a sentence-transformers model's transformer to ONNX, once, into a local cache.

The export is made from the model already loaded from its directory (never the Hub), written
under ``~/.cache/labs-api/onnx/<key>/`` where the key hashes the model's path, the size and
modification time of its weight files, the versions of torch, transformers and onnxruntime, and
the variant (fp32 or int8). A manifest records the file's SHA-256: a file that does not match
it (a crash mid-write, a disk error, a hand edit) or that ONNX Runtime cannot open is exported
again instead of being trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("labs_api.embeddings")

OnnxVariant = Literal["fp32", "int8"]
EXPORT_FORMAT = 1  # bump when the export itself changes (inputs, opset, quantisation)
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


def cache_key(source: str, variant: OnnxVariant, input_names: list[str]) -> str:
    """The cache folder's name for this model (a directory, else a Hub id), these library
    versions and this variant."""
    model_dir = Path(source)
    local = model_dir.is_dir()
    identity = {
        "path": str(model_dir.resolve()) if local else source,
        "files": _weights_fingerprint(model_dir) if local else [],
        "versions": _versions(),
        "variant": variant,
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


def export(auto_model: Any, input_names: list[str], folder: Path,
           variant: OnnxVariant) -> Path:
    """Export ``auto_model`` (a HuggingFace encoder) to ``folder/model.onnx``, atomically."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    wrapper = _LastHiddenState(auto_model, input_names).module
    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        with torch.no_grad():
            torch.onnx.export(wrapper, sample, str(fp32), input_names=input_names,
                              output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=OPSET, dynamo=False)
        produced = fp32
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
                                        "inputs": input_names, **_versions()}))
        os.replace(manifest, folder / MANIFEST_FILE)
    log.info("exported the embedding model to ONNX (%s) in %s", variant, folder)
    return target


def ensure_export(auto_model: Any, source: str, input_names: list[str],
                  variant: OnnxVariant, cache_dir: Path,
                  opens: Callable[[Path], bool]) -> tuple[Path, bool]:
    """The cached export, made first if missing or damaged; and whether it was made now."""
    folder = cache_dir / cache_key(source, variant, input_names)
    found = cached_model(folder, opens)
    if found is not None:
        return found, False
    with contextlib.suppress(FileNotFoundError):
        (folder / MANIFEST_FILE).unlink()
    return export(auto_model, input_names, folder, variant), True
