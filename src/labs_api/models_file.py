"""The models file (``LABS_MODELS_FILE``): which models one server offers, in TOML.

TOML because the standard library reads it (``tomllib``, Python 3.11+; ``tomli``, the same
parser, before), it has comments, and it cannot express anything but data (YAML's loaders can
build objects, and YAML needs a third-party parser). One ``[[models]]`` table per entry::

    [[models]]
    id = "smollm2"
    kind = "chat"
    source = "SmolLM2-135M-Instruct"     # bundled name, a file, a directory or a HF id
    aliases = ["gpt-4o-mini"]
    keep_alive = "10m"                   # seconds, a duration, -1 (never unload) or 0
    preload = true
    context_size = 4096                  # engine options: the kind's own set

Each kind is one entry class below (the ``kind`` field picks it); its engine options are named
after what they mean and each maps onto the ``Settings`` field the engine factories read, so a
new kind is a class here and a row in ``labs_api.catalog.KINDS``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, StringConstraints, ValidationError

from labs_api.keep_alive import KeepAlive

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: A model id or alias: what clients send as ``model``. No control characters or spaces at
#: either end, and short enough to log and list.
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256,
                                             pattern=r"^[^\x00-\x20\x7f](.*[^\x00-\x20\x7f])?$")]
MAX_ALIASES = 32


class ModelsFileError(ValueError):
    """A models file that cannot be used; the message is one line naming entry and field."""


class EntryBase(BaseModel):
    """What every entry has, whatever its kind."""

    model_config = ConfigDict(extra="forbid")
    #: entry field -> the Settings field it overrides for this model's engine
    SETTINGS: ClassVar[dict[str, str]] = {}

    id: ModelName
    source: str | None = Field(None, min_length=1, description="Bundled name, a file, a "
                               "directory or a HuggingFace id (unset: the kind's default)")
    aliases: list[ModelName] = Field(default_factory=list, max_length=MAX_ALIASES)
    keep_alive: KeepAlive | None = Field(None, description="Idle time before unloading "
                                         "(unset: LABS_KEEP_ALIVE)")
    preload: bool | None = Field(None, description="Load at start-up (unset: "
                                 "LABS_PRELOAD_ON_START)")
    memory: ByteSize | None = Field(None, description="Expected memory, for LABS_MAX_MODEL_"
                                    "MEMORY before the first load has measured it")
    description: str = Field("", max_length=1000)

    def settings_update(self) -> dict[str, Any]:
        """The engine options given, as Settings fields."""
        given = self.model_dump(include=set(self.SETTINGS), exclude_unset=True)
        return {self.SETTINGS[name]: value for name, value in given.items()}


class ChatEntry(EntryBase):
    kind: Literal["chat"]
    SETTINGS: ClassVar[dict[str, str]] = {
        "context_size": "n_ctx", "parallel": "parallel", "kv_unified": "kv_unified",
        "threads": "n_threads",
        "max_queue": "max_queue", "queue_timeout": "queue_timeout", "dtype": "torch_dtype",
        "device": "device_map", "load_in_4bit": "load_in_4bit"}
    context_size: int = Field(2048, ge=64, le=1 << 20, description="Tokens per slot")
    parallel: int = Field(8, ge=1, le=256)
    kv_unified: bool = True
    threads: int = Field(0, ge=0, le=1024)
    max_queue: int = Field(64, ge=0, le=100_000)
    queue_timeout: float = Field(60.0, gt=0, le=3600)
    dtype: Literal["bf16", "fp16", "fp32", "auto"] = "bf16"
    device: str = Field("auto", min_length=1, max_length=64)
    load_in_4bit: bool = False


class EmbeddingEntry(EntryBase):
    kind: Literal["embedding"]
    SETTINGS: ClassVar[dict[str, str]] = {
        "dtype": "embedding_dtype", "threads": "embedding_threads",
        "batch_size": "embedding_batch_size", "max_wait_ms": "embedding_max_wait_ms",
        "max_queue": "embedding_max_queue", "truncate": "embedding_truncate",
        "backend": "embedding_backend", "precision": "embedding_precision"}
    dtype: Literal["fp32", "bf16"] = "fp32"
    backend: Literal["openvino", "onnx", "onnx-int8", "torch"] = "openvino"
    precision: Literal["auto", "f32"] = "auto"
    threads: int = Field(0, ge=0, le=256)
    batch_size: int = Field(64, ge=1, le=2048)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    max_queue: int = Field(4096, ge=1, le=1_000_000)
    truncate: bool = False


class SpeechEntry(EntryBase):
    kind: Literal["speech"]
    SETTINGS: ClassVar[dict[str, str]] = {
        "threads": "tts_threads", "max_queue": "tts_max_queue", "device": "device_map"}
    threads: int = Field(1, ge=1, le=64)
    max_queue: int = Field(16, ge=1, le=10_000)
    device: str = Field("auto", min_length=1, max_length=64)


class TranscriptionEntry(EntryBase):
    kind: Literal["transcription"]
    SETTINGS: ClassVar[dict[str, str]] = {
        "threads": "stt_threads", "compute_type": "stt_compute_type",
        "beam_size": "stt_beam_size", "max_queue": "stt_max_queue"}
    threads: int = Field(1, ge=1, le=64)
    compute_type: Literal["int8", "int8_float32", "float32", "float16", "default"] = "float32"
    beam_size: int = Field(5, ge=1, le=16)
    max_queue: int = Field(8, ge=0, le=1024)


class RerankEntry(EntryBase):
    kind: Literal["rerank"]
    SETTINGS: ClassVar[dict[str, str]] = {"threads": "embedding_threads"}
    source: str = Field(min_length=1, description="A sentence-transformers CrossEncoder: a "
                        "HuggingFace id or a directory")
    threads: int = Field(0, ge=0, le=256)


ModelEntry = Annotated[ChatEntry | EmbeddingEntry | SpeechEntry | TranscriptionEntry
                       | RerankEntry, Field(discriminator="kind")]
KIND_NAMES = ("chat", "embedding", "speech", "transcription", "rerank")


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[ModelEntry] = Field(min_length=1, max_length=1000)


def read_models_file(path: Path) -> list[EntryBase]:
    """The entries of ``path``, with relative sources resolved against its folder. Raises
    :class:`ModelsFileError` (one line) for a file that cannot be read, parsed or used."""
    where = f"LABS_MODELS_FILE {path}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelsFileError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ModelsFileError(f"{where}: is not UTF-8 ({exc.reason} at byte {exc.start})"
                              ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"{where}: not valid TOML: {exc}") from None
    try:
        parsed = ModelsFile.model_validate(raw)
    except ValidationError as exc:
        raise ModelsFileError(f"{where}: {describe(exc, raw)}") from None
    entries: list[EntryBase] = list(parsed.models)
    check_names(entries, where)
    for entry in entries:
        if entry.source is not None:
            local = path.parent / Path(entry.source).expanduser()
            if not Path(entry.source).expanduser().is_absolute() and local.exists():
                entry.source = str(local.resolve())
    return entries


def describe(error: ValidationError, raw: Any) -> str:
    """'entry 2 (id 'coder'): context_size: ...' for each problem, on one line."""
    parts = []
    for item in error.errors()[:3]:
        loc = list(item["loc"])
        if loc[:1] != ["models"] or len(loc) < 2 or not isinstance(loc[1], int):
            field = ".".join(str(p) for p in loc) or "the file"
            parts.append(f"{field}: {item['msg']}")
            continue
        index = loc[1]
        entry = raw["models"][index] if isinstance(raw.get("models"), list) else {}
        name = entry.get("id") if isinstance(entry, dict) else None
        label = f"entry {index + 1}" + (f" (id {name!r})" if isinstance(name, str) else "")
        rest = [str(p) for p in loc[2:]]
        if rest and rest[0] in KIND_NAMES:
            rest = rest[1:]  # the union's tag: the entry's kind, not a field
        if item["type"] in ("union_tag_not_found", "union_tag_invalid"):
            rest = ["kind"]
            item = {**item, "msg": f"must be one of {', '.join(KIND_NAMES)}"}
        field = ".".join(rest) or "entry"
        value = item.get("input")
        shown = f" (got {value!r})" if rest and item["type"] != "missing" and \
            isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 80 else ""
        parts.append(f"{label}: {field}: {item['msg']}{shown}")
    more = len(error.errors()) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def check_names(entries: list[EntryBase], where: str) -> None:
    """Every id and alias names one entry only."""
    owner: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        label = f"entry {number} (id {entry.id!r})"
        for field, name in [("id", entry.id)] + [("aliases", a) for a in entry.aliases]:
            if name in owner:
                raise ModelsFileError(f"{where}: {label}: {field}: {name!r} is already "
                                      f"{owner[name]}")
            owner[name] = f"the id or an alias of {label}"
