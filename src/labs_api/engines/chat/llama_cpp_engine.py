"""Chat on GGUF files through llama.cpp: the fast CPU path, with continuous batching."""

from __future__ import annotations

import ctypes
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from labs_api.engines.chat.admission import QueuePolicy
from labs_api.engines.chat.base import (
    ChatEngine,
    ChatMessage,
    GenerationChunk,
    OutputConstraint,
    SamplingParams,
)
from labs_api.engines.chat.chat_template import CHATML_TEMPLATE, ChatTemplate
from labs_api.engines.chat.llama_cpp_model import ContextShape, LlamaCppModel
from labs_api.engines.chat.llama_cpp_scheduler import LlamaCppScheduler
from labs_api.engines.errors import InvalidRequest


def default_thread_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LlamaCppOptions:
    context_per_slot: int = 2048
    slots: int = 8
    threads: int = 0  # 0: one per core
    batch_tokens: int = 512
    max_waiting: int = 64
    queue_timeout_s: float = 60.0


class LlamaCppChatEngine(ChatEngine):
    """A GGUF model served by a continuous-batching scheduler over ``slots`` sequences."""

    def __init__(self, model_id: str, gguf_path: str | Path,
                 options: LlamaCppOptions | None = None) -> None:
        options = options or LlamaCppOptions()
        threads = options.threads or default_thread_count()
        self.model_id = model_id
        self.model = LlamaCppModel(gguf_path, ContextShape(
            slots=options.slots, context_per_slot=options.context_per_slot,
            batch_tokens=options.batch_tokens, threads=threads))
        self.context_length = self.model.context_per_slot
        self.vocab_size = self.model.n_vocab
        self.template = ChatTemplate(
            self.model.chat_template() or CHATML_TEMPLATE,
            bos_token=self.model.special_token_text("bos"),
            eos_token=self.model.special_token_text("eos"),
        )
        self.scheduler = LlamaCppScheduler(
            self.model, options.slots,
            QueuePolicy(max_waiting=options.max_waiting, timeout_s=options.queue_timeout_s),
            threads)

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        text = self.template.render(messages)
        bos = self.template.bos_token
        add_bos = self.model.adds_bos() and not (bos and text.startswith(bos))
        return self.model.tokenize(text, add_bos=add_bos)

    def tokenize_text(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_bos=self.model.adds_bos())

    def detokenize(self, tokens: list[int]) -> str:
        """The text of ``tokens``, special tokens left out (the echo of a token-id prompt).
        Its own buffer, not the decoder's: safe beside the scheduler thread."""
        lib, count = self.model.lib, len(tokens)
        array = (lib.llama_token * count)(*tokens)
        size = 16 * count + 16
        for _ in range(2):
            buffer = ctypes.create_string_buffer(size)
            written = lib.llama_detokenize(self.model.vocab, array, count, buffer, size, True,
                                           False)
            if written >= 0:
                return buffer.raw[:written].decode("utf-8", "replace")
            size = -written
        raise RuntimeError("llama_detokenize did not fit its buffer")

    def stream_tokens(
        self, prompt: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        return self.scheduler.submit(prompt, params, grammar_for(params.constraint))

    def queue_stats(self) -> tuple[int, int]:
        return self.scheduler.active_count(), self.scheduler.waiting_count()

    def close(self) -> None:
        self.scheduler.close()
        self.model.close()


#: Largest count a JSON schema may ask for (minLength, maxLength, minItems, maxItems, a pattern's
#: {m,n}). llama-cpp-python's converter writes a count out as that many nested rules: 10^9 takes
#: gigabytes (the process is killed), 30,000 overflows llama.cpp's grammar parser (a crash).
MAX_SCHEMA_COUNT = 1000
MAX_GRAMMAR_CHARS = 1_000_000
_COUNT_KEYS = ("minLength", "maxLength", "minItems", "maxItems")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def largest_count(schema: object) -> int:
    """The largest repetition count anywhere in ``schema``."""
    if isinstance(schema, list):
        return max([0, *(largest_count(item) for item in schema)])
    if not isinstance(schema, dict):
        return 0
    counts = [v for k, v in schema.items() if k in _COUNT_KEYS and isinstance(v, int)]
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        counts += [int(n) for bounds in _QUANTIFIER.findall(pattern) for n in bounds if n]
    return max([0, *counts, *(largest_count(value) for value in schema.values())])


#: llama-cpp-python's schema converter lets a JSON string hold raw control characters
#: (``char ::= [^"\\] | ...``), so a constrained answer could be invalid JSON (a raw newline
#: inside a string); JSON allows them only escaped.
_LOOSE_CHAR = re.compile(r'^(char ::= )\[\^"\\\\\]', re.MULTILINE)


def strict_json_strings(grammar: str) -> str:
    """The grammar with its string characters limited to what JSON allows unescaped."""
    return _LOOSE_CHAR.sub(lambda m: m.group(1) + r'[^"\\\x7F\x00-\x1F]', grammar)


def grammar_for(constraint: OutputConstraint | None) -> str | None:
    """The GBNF grammar that makes llama.cpp's output valid JSON (against a schema, if any)."""
    if constraint is None:
        return None
    from llama_cpp import llama_grammar

    if constraint.kind == "json_object":
        return llama_grammar.JSON_GBNF
    try:
        count = largest_count(constraint.schema)
        if count > MAX_SCHEMA_COUNT:
            raise ValueError(f"a repetition count of {count} (minLength, maxLength, minItems, "
                             f"maxItems or a pattern's {{m,n}}); at most {MAX_SCHEMA_COUNT}")
        grammar = strict_json_strings(
            llama_grammar.json_schema_to_gbnf(json.dumps(constraint.schema or {})))
        if len(grammar) > MAX_GRAMMAR_CHARS:
            raise ValueError(f"its grammar is {len(grammar)} characters; at most "
                             f"{MAX_GRAMMAR_CHARS}")
        return grammar
    except Exception as exc:  # the converter raises plain exceptions for what it cannot do
        raise InvalidRequest(f"Unsupported JSON schema in {constraint.param}: {exc}",
                              param=constraint.param) from None
