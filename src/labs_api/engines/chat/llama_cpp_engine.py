"""Chat on GGUF files through llama.cpp (llama-cpp-python): the fast CPU path."""

from __future__ import annotations

import codecs
import logging
import os
import random
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labs_api.engines.chat.base import ChatEngine, ChatMessage, GenerationChunk, SamplingParams
from labs_api.engines.chat.chat_template import CHATML_TEMPLATE, ChatTemplate
from labs_api.engines.chat.stop_text import StopSequenceFilter
from labs_api.engines.chat.thread_stream import stream_from_thread
from labs_api.engines.optional import require
from labs_api.errors import ContextLengthError

log = logging.getLogger("labs_api.llama_cpp")


def default_thread_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


class LlamaCppChatEngine(ChatEngine):
    """One GGUF model; requests run one at a time on a dedicated worker thread."""

    def __init__(self, model_id: str, gguf_path: str | Path, n_ctx: int, n_threads: int = 0):
        llama_cpp = require("llama_cpp", package="llama-cpp-python")
        self._llama_cpp = llama_cpp
        self.model_id = model_id
        threads = n_threads or default_thread_count()
        self._llm = llama_cpp.Llama(
            model_path=str(gguf_path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.context_length = self._llm.n_ctx()
        self._vocab = self._llm._model.vocab  # noqa: SLF001
        self._template = self._load_template()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")

    def _load_template(self) -> ChatTemplate:
        meta = self._llm.metadata
        source = meta.get("tokenizer.chat_template") or CHATML_TEMPLATE
        return ChatTemplate(
            source,
            bos_token=self._token_text(self._llm.token_bos()),
            eos_token=self._token_text(self._llm.token_eos()),
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def _is_end_of_generation(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        text = self._template.render(messages)
        bos = self._template.bos_token
        add_bos = self._llm._model.add_bos_token() and not (bos and text.startswith(bos))  # noqa: SLF001
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def stream(
        self, messages: list[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        prompt = self.tokenize_prompt(messages)
        if len(prompt) >= self.context_length:
            raise ContextLengthError(
                f"The prompt is {len(prompt)} tokens; this model's context is "
                f"{self.context_length} tokens, and the reply needs room too.",
                param="messages",
            )
        return stream_from_thread(self._executor, lambda cancel: self._run(prompt, params, cancel))

    def _run(
        self, prompt: list[int], params: SamplingParams, cancelled: threading.Event
    ) -> Iterator[GenerationChunk]:
        llm = self._llm
        if params.seed is not None:
            # Same seed, same output: re-evaluate the whole prompt, since logits computed
            # from a reused prefix differ in the last bits and sampling amplifies that.
            llm.set_seed(params.seed)
            llm.n_tokens = 0
        else:
            llm.set_seed(random.getrandbits(32))
        budget = min(params.max_tokens, self.context_length - len(prompt))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopSequenceFilter(params.stop)
        produced = 0
        finish = "length"
        tokens = llm.generate(
            prompt,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=0.0,
            typical_p=1.0,
            temp=params.temperature,
            repeat_penalty=1.0,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            reset=True,
        )
        try:
            for token in tokens:
                if cancelled.is_set():
                    return
                if self._is_end_of_generation(token):
                    finish = "stop"
                    break
                produced += 1
                piece = decoder.decode(llm.detokenize([token], special=False))
                text = stops.push(piece)
                if text:
                    yield GenerationChunk(text=text)
                if stops.stopped:
                    finish = "stop"
                    break
                if produced >= budget:
                    break
        finally:
            tokens.close()
        tail = stops.push(decoder.decode(b"", final=True)) + stops.flush()
        yield GenerationChunk(
            text=tail,
            finish_reason=finish,  # type: ignore[arg-type]
            prompt_tokens=len(prompt),
            completion_tokens=produced,
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._llm.close()
