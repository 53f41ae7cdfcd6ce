"""Which models are served: the entries of the models file, of ``LABS_MODELS_DIR`` and of the
single-model variables, made into the registry's slots.

Without a models file or folder this is what it always was: one entry per kind, from
``LABS_MODEL``, ``LABS_EMBEDDING_MODEL``, ``LABS_TTS_MODEL`` and ``LABS_STT_MODEL``. With one,
its entries come after those variables that were set explicitly, and each kind the file and
folder lack keeps its variable's (default) entry.

Adding a model kind: an entry class in ``labs_api.models_file`` and a row in :data:`KINDS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from labs_api.engines.chat.factory import chat_engine_name, chat_slot
from labs_api.engines.embedding.factory import embedding_slot
from labs_api.engines.rerank.factory import rerank_slot
from labs_api.engines.speech.factory import speech_slot
from labs_api.engines.transcription.factory import MULTILINGUAL_BASE, transcription_slot
from labs_api.models import LoadLimits, ModelRegistry, ModelSlot
from labs_api.models_file import (
    ChatEntry,
    EmbeddingEntry,
    EntryBase,
    ModelsFileError,
    RerankEntry,
    SpeechEntry,
    TranscriptionEntry,
    read_models_file,
)
from labs_api.settings import Settings
from labs_api.workers.supervisor import WorkerOptions

log = logging.getLogger("labs_api.catalog")

CatalogError = ModelsFileError


@dataclass(frozen=True)
class Kind:
    """What the catalog needs to know of a model kind."""

    variable: str  # the Settings field of its single-model variable (also the source field)
    entry: type[EntryBase]
    slot: Callable[[Settings, str], ModelSlot]  # (settings with the source, id) -> slot
    capabilities: Callable[[Settings], tuple[str, ...]]
    context_length: Callable[[Settings], int | None] = lambda settings: None


def _chat_capabilities(settings: Settings) -> tuple[str, ...]:
    if chat_engine_name(settings.model) == "llama.cpp":
        return ("chat", "completions", "streaming", "tools", "tool_choice", "json_object",
                "json_schema", "logprobs", "seed")
    return ("chat", "completions", "streaming", "tools", "logprobs", "seed")


def _chat_context(settings: Settings) -> int | None:
    return settings.n_ctx if chat_engine_name(settings.model) == "llama.cpp" else None


def _transcription_capabilities(settings: Settings) -> tuple[str, ...]:
    base = ("transcription", "streaming", "timestamps")
    return base + ("translation",) if settings.stt_model == MULTILINGUAL_BASE else base


KINDS: dict[str, Kind] = {
    "chat": Kind("model", ChatEntry, chat_slot, _chat_capabilities, _chat_context),
    "embedding": Kind("embedding_model", EmbeddingEntry, embedding_slot,
                      lambda s: ("embeddings", "similarities", "dimensions")),
    "speech": Kind("tts_model", SpeechEntry, speech_slot,
                   lambda s: ("speech", "streaming", "voices")),
    "transcription": Kind("stt_model", TranscriptionEntry, transcription_slot,
                          _transcription_capabilities),
    # optional: served only when LABS_RERANK_MODEL or the file names one
    "rerank": Kind("rerank_model", RerankEntry, rerank_slot, lambda s: ("rerank",)),
}


def model_entries(settings: Settings) -> list[EntryBase]:
    """Every entry served, in order (the first of a kind is its default). Raises
    :class:`CatalogError` (one line) for a bad models file or clashing names."""
    listed: list[EntryBase] = []
    if settings.models_file is not None:
        listed += read_models_file(Path(settings.models_file))
    if settings.models_dir is not None:
        taken = {name for e in listed for name in (e.id, *e.aliases)}
        for path in sorted(Path(settings.models_dir).glob("*.gguf")):
            if path.stem in taken:
                log.warning("LABS_MODELS_DIR: %s is not added: the id %r is taken", path,
                            path.stem)
                continue
            listed.append(ChatEntry(id=path.stem, kind="chat", source=str(path)))
    kinds = {e.kind for e in listed}  # type: ignore[attr-defined]
    explicit = settings.model_fields_set
    from_variables = []
    for name, kind in KINDS.items():
        if name in kinds and kind.variable not in explicit:
            continue
        value = getattr(settings, kind.variable)
        if value is None:  # an optional kind nobody asked for
            continue
        try:
            from_variables.append(kind.entry(id=value, kind=name, source=value))  # type: ignore[call-arg]
        except ValidationError as exc:
            raise CatalogError(f"invalid LABS_{kind.variable.upper()}={value!r}: "
                               f"{exc.errors()[0]['msg']}") from None
    entries = from_variables + listed
    owner: dict[str, str] = {}
    for entry in entries:
        for name in (entry.id, *entry.aliases):
            if name in owner:
                variable = next((f"LABS_{k.variable.upper()}" for k in KINDS.values()
                                 if entry in from_variables and k.entry is type(entry)), None)
                raise CatalogError(f"model {name!r} of {variable or 'the models'} is "
                                   f"served twice (also {owner[name]})")
            owner[name] = f"entry {entry.id!r}"
    return entries


def entry_slot(entry: EntryBase, settings: Settings) -> ModelSlot:
    """The registry's slot for one entry: the settings its engine loads with are the
    server's, with the entry's source and engine options."""
    kind = KINDS[entry.kind]  # type: ignore[attr-defined]
    update = entry.settings_update()
    if entry.source is not None:
        update[kind.variable] = entry.source
    own = settings.model_copy(update=update)
    slot = kind.slot(own, entry.id)
    slot.aliases = tuple(entry.aliases)
    slot.keep_alive = settings.keep_alive if entry.keep_alive is None else entry.keep_alive
    slot.preload = entry.preload
    slot.memory_hint = int(entry.memory) if entry.memory is not None else None
    slot.capabilities = kind.capabilities(own)
    slot.context_length = kind.context_length(own)
    if entry.description:
        slot.description = entry.description
    return slot


def build_registry(settings: Settings, workers: WorkerOptions | None = None) -> ModelRegistry:
    """One slot per entry, each engine in a worker process of its own when ``workers`` is
    given."""
    slots = [entry_slot(entry, settings) for entry in model_entries(settings)]
    registry = ModelRegistry(slots, workers, LoadLimits.from_settings(settings))
    registry.preload_default = settings.preload_on_start
    return registry


def worker_options(settings: Settings) -> WorkerOptions | None:
    """How engine workers are supervised; None when engines run in the server process."""
    if not settings.engine_workers:
        log.warning(
            "LABS_ENGINE_WORKERS=false: every engine runs in the server process. An engine "
            "crash ends the server; and a llama.cpp built with OpenMP (scripts/setup builds "
            "it without) shares torch's OpenMP runtime once a torch model (embeddings, "
            "rerank) has computed, and decodes at about 0.6x (measured: one stream 90 -> 55 "
            "tok/s on 2 cores); workers avoid both")
        return None
    return WorkerOptions(stall_seconds=settings.engine_stall_seconds,
                         log_level=settings.log_level)

