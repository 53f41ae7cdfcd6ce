"""Chat on GGUF files through llama.cpp: the fast CPU path, with continuous batching."""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from labs_api.engines.chat.admission import QueuePolicy
from labs_api.engines.chat.base import (
    ChatEngine,
    ChatMessage,
    GenerationChunk,
    SamplingParams,
)
from labs_api.engines.chat.chat_template import CHATML_TEMPLATE, ChatTemplate, render_parts
from labs_api.engines.chat.grammar import compile_constraint, grammar_for, largest_count
from labs_api.engines.chat.llama_cpp_model import ContextShape, LlamaCppModel
from labs_api.engines.chat.llama_cpp_scheduler import LlamaCppScheduler
from labs_api.engines.chat.outlet import CHUNK_OUTLET, ChunkOutlet


def default_thread_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LlamaCppOptions:
    context_per_slot: int = 2048
    slots: int = 8
    threads: int = 0  # 0: one per core
    poll: int = 0  # a build without OpenMP: its pool threads' polling level (llama_threadpool)
    batch_tokens: int = 512
    max_waiting: int = 64
    queue_timeout_s: float = 60.0
    unified_kv: bool = True  # one KV cache of context_per_slot x slots tokens for all slots
    prompt_cache_bytes: int = 0  # finished conversations' KV kept in host memory (0: off)


class LlamaCppChatEngine(ChatEngine):
    """A GGUF model served by a continuous-batching scheduler over ``slots`` sequences."""

    def __init__(self, model_id: str, gguf_path: str | Path,
                 options: LlamaCppOptions | None = None) -> None:
        options = options or LlamaCppOptions()
        threads = options.threads or default_thread_count()
        self.model_id = model_id
        self.model = LlamaCppModel(gguf_path, ContextShape(
            slots=options.slots, context_per_slot=options.context_per_slot,
            batch_tokens=options.batch_tokens, threads=threads, unified=options.unified_kv,
            poll=options.poll))
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
            threads, options.prompt_cache_bytes)

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        """The template's markup is tokenized with special tokens, each message's content as
        plain text (a client cannot close its turn by writing ``<|im_end|>``)."""
        parts = render_parts(self.template.render, messages)
        bos = self.template.bos_token
        starts_with_bos = bool(parts and parts[0][1] and bos and parts[0][0].startswith(bos))
        tokens: list[int] = []
        if self.model.adds_bos() and not starts_with_bos:
            tokens.append(self.model.bos_token())
        for text, markup in parts:
            tokens += self.model.tokenize(text, add_bos=False, special=markup)
        return tokens

    def tokenize_text(self, text: str) -> list[int]:
        """Legacy completions: the prompt is raw model input, special tokens included (the
        client writes the whole prompt, as with OpenAI's and llama.cpp's servers)."""
        return self.model.tokenize(text, add_bos=self.model.adds_bos())

    def tokenize_content(self, text: str, add_special: bool) -> list[int]:
        return self.model.tokenize(text, add_bos=add_special and self.model.adds_bos())

    def token_pieces(self, tokens: list[int]) -> list[bytes]:
        """Special tokens as their text. A buffer of its own (``model.piece`` shares the
        decoder's), so this is safe beside the scheduler thread."""
        lib, vocab = self.model.lib, self.model.vocab
        pieces = []
        for token in tokens:
            buffer = ctypes.create_string_buffer(64)
            size = lib.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = lib.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
            pieces.append(buffer.raw[:max(size, 0)])
        return pieces

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
        """Queued at once (503 raises here) unless a grammar must be compiled first."""
        if params.constraint is None:
            return self.scheduler.submit(prompt, params)
        return self._constrained(prompt, params)

    async def _constrained(self, prompt: list[int],
                           params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        group = await self._submit([(prompt, params)])
        try:
            async for _, chunk in group:
                yield chunk
        finally:
            await group.aclose()

    async def stream_group(
        self, items: list[tuple[list[int], SamplingParams]]
    ) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """The generations of one request, admitted, cancelled and failed together. Under a
        ``CHUNK_OUTLET`` (an engine worker) only each generation's last chunk is yielded: the
        others went through the outlet."""
        for prompt, params in items:
            self.check_prompt(prompt, params)
        group = await self._submit(items, CHUNK_OUTLET.get())
        try:
            async for event in group:
                yield event
        finally:
            await group.aclose()  # type: ignore[attr-defined]

    async def _submit(self, items: list[tuple[list[int], SamplingParams]],
                      outlet: ChunkOutlet | None = None,
                      ) -> AsyncIterator[tuple[int, GenerationChunk]]:
        if any(params.constraint is not None for _, params in items):
            grammars = await asyncio.to_thread(self._compile_grammars, items)
        else:  # nothing to compile: no thread hop (it costs first-token latency under load)
            grammars = [None] * len(items)
        # On a 503 the queue frees the grammars itself.
        return self.scheduler.submit_group(
            [(prompt, params, grammar)
             for (prompt, params), grammar in zip(items, grammars, strict=True)], outlet)

    def _compile_grammars(self, items: list[tuple[list[int], SamplingParams]]) -> list:
        """One compiled grammar per generation; each distinct constraint is converted and
        compiled once, then cloned (on a worker thread: never on the loop or decode thread)."""
        by_constraint: dict[int, list[int]] = {}
        for index, (_, params) in enumerate(items):
            if params.constraint is not None:
                by_constraint.setdefault(id(params.constraint), []).append(index)
        grammars: list = [None] * len(items)
        try:
            for indexes in by_constraint.values():
                constraint = items[indexes[0]][1].constraint
                assert constraint is not None
                for index, grammar in zip(indexes, compile_constraint(
                        self.model, constraint, len(indexes)), strict=True):
                    grammars[index] = grammar
        except BaseException:
            for grammar in grammars:
                if grammar is not None:
                    self.model.free_sampler(grammar)
            raise
        return grammars

    def queue_stats(self) -> tuple[int, int]:
        return self.scheduler.active_count(), self.scheduler.waiting_count()

    def close(self) -> None:
        self.scheduler.close()
        self.model.close()


__all__ = ["LlamaCppChatEngine", "LlamaCppOptions", "grammar_for", "largest_count"]
