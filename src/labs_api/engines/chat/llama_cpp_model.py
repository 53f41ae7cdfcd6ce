"""A GGUF model and a multi-sequence context through llama.cpp's C API (llama-cpp-python's
ctypes bindings): loading, tokenizing, decoding batches, sampling. No scheduling here."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labs_api.engines.chat.base import SamplingParams, TokenLogprob
from labs_api.engines.chat.llama_cpp_build import built_with_openmp, system_info
from labs_api.engines.chat.llama_native_log import route_native_log
from labs_api.engines.chat.llama_threadpool import GgmlThreadpool
from labs_api.engines.optional import require

log = logging.getLogger("labs_api.llama_cpp")


def penalised(params: SamplingParams) -> bool:
    """Whether the request's sampler chain has llama.cpp's penalty sampler (it keeps state)."""
    return bool(params.frequency_penalty or params.presence_penalty)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """llama.cpp prints thousands of lines to stderr (fd 2) while it loads a model; hide them
    unless debug logging is on. (Its log callback hook does not catch the loader's output.)"""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


#: llama_token_data as a numpy record: a candidates array numpy fills and llama.cpp reads.
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
#: How many of the most likely tokens the grammar checks, widening, when it rejected the
#: model's own choice, before it masks the whole vocabulary. Masking costs about the same per
#: token checked, so the tiers keep a rejection to a fraction of a full mask in nearly every
#: case (on the bundled model a forced continuation is usually in the top 4096 but not always
#: in the top 256).
SHORTLISTS = (256, 4096)


class DecodeError(RuntimeError):
    """llama_decode failed (for example: no room left in the KV cache)."""


class _LogitsRows:
    """The logits llama.cpp computed for one batch position, as a numpy view of its buffer.

    llama-cpp-python's binding returns a float pointer, and ``np.ctypeslib.as_array`` on it
    builds a ctypes array type and a buffer description each call. Here the row's address
    comes from a binding returning it as an integer, and the view over an address is made
    once: llama.cpp keeps its output buffer from one decode to the next. Should it make a new
    one, an address seen before is still safe to view again: a view is only read right after
    llama.cpp returned its address as a row's start, so a whole row is alive there."""

    MAX_VIEWS = 512  # distinct rows remembered (one per batch position that had logits)

    def __init__(self, cdll: Any, ctx: Any, n_vocab: int) -> None:
        self._row_address = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)(
            ("llama_get_logits_ith", cdll))
        self._ctx = ctx
        self._row_type = ctypes.c_float * n_vocab
        self._views: dict[int, np.ndarray] = {}

    def __call__(self, batch_index: int) -> np.ndarray:
        address = self._row_address(self._ctx, batch_index)
        if not address:
            raise DecodeError(f"llama.cpp has no logits at batch position {batch_index}")
        view = self._views.get(address)
        if view is None:
            if len(self._views) >= self.MAX_VIEWS:
                self._views.clear()
            view = self._views[address] = np.frombuffer(
                self._row_type.from_address(address), dtype=np.float32)
        return view


@dataclass(frozen=True)
class ContextShape:
    slots: int  # sequences decoded together
    context_per_slot: int  # KV cells per sequence (unified: on average; the total is x slots)
    batch_tokens: int  # most tokens in one decode call
    threads: int
    unified: bool = True  # one KV cache shared by all sequences, sized in tokens
    #: Without OpenMP: how long ggml's pool threads poll for the next graph before they
    #: sleep (0..100; see llama_threadpool). Ignored by an OpenMP build.
    poll: int = 0


class LlamaCppModel:
    """Owns the llama.cpp model, one context with ``slots`` independent sequences, and a batch."""

    def __init__(self, gguf_path: str | Path, shape: ContextShape) -> None:
        self.lib = lib = require("llama_cpp", package="llama-cpp-python")
        route_native_log(lib)
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        with native_stderr_silenced():
            self.model = lib.llama_model_load_from_file(str(gguf_path).encode(), model_params)
        if not self.model:
            raise OSError(f"llama.cpp could not load the GGUF file {gguf_path}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)

        params = lib.llama_context_default_params()
        params.n_ctx = shape.context_per_slot * shape.slots
        params.n_batch = shape.batch_tokens
        params.n_ubatch = shape.batch_tokens
        params.n_seq_max = shape.slots
        params.n_threads = shape.threads
        params.n_threads_batch = shape.threads
        # Unified: one pool of KV cells for every sequence, so one request may use far more
        # than an equal share (an agent's 8k-token prompt) while others stay short; the
        # scheduler admits a request only when its prompt and reply fit in what is free.
        # Separate streams: each sequence owns n_ctx / slots cells, laid out from cell 0.
        params.kv_unified = shape.unified
        params.no_perf = True
        with native_stderr_silenced():
            self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise MemoryError("llama.cpp could not create a context (out of memory?)")
        self.threadpool: GgmlThreadpool | None = None
        self.memory = lib.llama_get_memory(self.ctx)
        #: KV cells in all (what every sequence's tokens share when unified).
        self.kv_tokens = int(lib.llama_n_ctx(self.ctx))
        #: Most tokens one sequence may hold: its share, or (unified) the whole cache, never
        #: past the context the model was trained for.
        trained = int(lib.llama_model_n_ctx_train(self.model))
        per_sequence = int(lib.llama_n_ctx_seq(self.ctx))
        self.context_per_slot = min(per_sequence, trained) if trained > 0 else per_sequence
        self.unified = shape.unified
        self.batch_tokens = shape.batch_tokens
        self.batch = lib.llama_batch_init(shape.batch_tokens, 0, 1)
        self.threads = shape.threads
        self._piece_buffer = ctypes.create_string_buffer(256)
        self._all_ids = np.arange(self.n_vocab, dtype=np.int32)
        # What each generated token is, looked up once per token id: on the scheduler's
        # path between two decodes a ctypes call costs tens of microseconds (the decode has
        # swept the caches), and llama.cpp's vocabulary never changes.
        self._pieces: list[bytes | None] = [None] * self.n_vocab
        self._end_of_generation: dict[int, bool] = {}
        self._logits_at = _LogitsRows(lib.llama_cpp._lib, self.ctx, self.n_vocab)
        if not built_with_openmp(system_info()):
            try:
                with native_stderr_silenced():  # llama.cpp prints "attach_threadpool: call"
                    self.threadpool = GgmlThreadpool(lib.llama_cpp._lib, self.ctx,
                                                     shape.threads, shape.poll)
            except Exception:
                self.close()
                raise
            log.info("llama.cpp: ggml threadpool of %d threads attached (poll level %d)",
                     shape.threads, shape.poll)

    # -- text <-> tokens ---------------------------------------------------------------------

    def metadata(self, key: str) -> str | None:
        buffer = ctypes.create_string_buffer(1 << 16)
        size = self.lib.llama_model_meta_val_str(self.model, key.encode(), buffer, len(buffer))
        return buffer.value.decode("utf-8", errors="replace") if size >= 0 else None

    def chat_template(self) -> str | None:
        raw = self.lib.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8") if raw else None

    def adds_bos(self) -> bool:
        return bool(self.lib.llama_vocab_get_add_bos(self.vocab))

    def bos_token(self) -> int:
        return int(self.lib.llama_vocab_bos(self.vocab))

    def special_token_text(self, which: str) -> str:
        token = getattr(self.lib, f"llama_vocab_{which}")(self.vocab)
        return "" if token < 0 else self.piece(token, special=True).decode("utf-8", "ignore")

    def tokenize(self, text: str, add_bos: bool, special: bool = True) -> list[int]:
        """``special``: text such as ``<|im_end|>`` becomes its special token (for the chat
        template's markup only; never for what a client wrote)."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (self.lib.llama_token * capacity)()
        count = self.lib.llama_tokenize(self.vocab, data, len(data), tokens, capacity,
                                        add_bos, special)
        if count < 0:  # the buffer was too small: -count is the size needed
            capacity = -count
            tokens = (self.lib.llama_token * capacity)()
            count = self.lib.llama_tokenize(self.vocab, data, len(data), tokens, capacity,
                                            add_bos, special)
        return list(tokens[:count])

    def piece(self, token: int, special: bool = False) -> bytes:
        buffer = self._piece_buffer
        size = self.lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, special)
        if size < 0:
            bigger = ctypes.create_string_buffer(-size)
            size = self.lib.llama_token_to_piece(self.vocab, token, bigger, -size, 0, special)
            return bigger.raw[:size]
        return buffer.raw[:size]

    def text_piece(self, token: int) -> bytes:
        """``piece(token)`` (special tokens as nothing), remembered per token id."""
        known = self._pieces[token]
        if known is None:
            known = self._pieces[token] = self.piece(token)
        return known

    def is_end_of_generation(self, token: int) -> bool:
        known = self._end_of_generation.get(token)
        if known is None:
            known = self._end_of_generation[token] = bool(
                self.lib.llama_vocab_is_eog(self.vocab, token))
        return known

    # -- batches -------------------------------------------------------------------------------

    def batch_clear(self) -> None:
        self.batch.n_tokens = 0

    def batch_add(self, token: int, position: int, sequence: int, wants_logits: bool) -> int:
        """Append one token; returns its index in the batch (where its logits will be)."""
        batch = self.batch
        i = batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = sequence
        batch.logits[i] = wants_logits
        batch.n_tokens = i + 1
        return i

    def decode(self) -> None:
        code = self.lib.llama_decode(self.ctx, self.batch)
        if code != 0:
            reason = "no room left in the KV cache" if code == 1 else f"error code {code}"
            raise DecodeError(f"llama_decode failed: {reason}")

    def set_threads(self, threads: int) -> None:
        if threads != self.threads:
            self.lib.llama_set_n_threads(self.ctx, threads, threads)
            self.threads = threads

    def save_sequence(self, sequence: int) -> bytes:
        """A copy of the KV cells ``sequence`` holds (``restore_sequence`` puts it back)."""
        lib = self.lib
        size = int(lib.llama_state_seq_get_size(self.ctx, sequence))
        buffer = (ctypes.c_uint8 * size)()
        written = int(lib.llama_state_seq_get_data(self.ctx, buffer, size, sequence))
        return ctypes.string_at(buffer, written)

    def restore_sequence(self, sequence: int, state: bytes) -> bool:
        """Replace ``sequence``'s cells with a saved copy; False (and the sequence empty) when
        the cache has no room for it."""
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        with native_stderr_silenced():
            read = int(self.lib.llama_state_seq_set_data(self.ctx, buffer, len(state),
                                                         sequence))
        if read == 0:
            self.forget(sequence)
        return read > 0

    def forget(self, sequence: int, from_position: int = 0) -> None:
        """Drop a sequence's cached tokens from ``from_position`` on."""
        self.lib.llama_memory_seq_rm(self.memory, sequence, from_position, -1)

    # -- sampling ------------------------------------------------------------------------------

    def new_sampler(self, params: SamplingParams, seed: int) -> Any:
        """A llama.cpp sampler chain for one request, in OpenAI's order: logit bias, penalties
        on the tokens generated so far, then temperature, top-k, top-p and a seeded draw (or
        the most likely token at temperature 0). An output grammar is a separate sampler
        (``compile_grammar``), applied by ``sample`` only where it is needed."""
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda sampler: lib.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        if params.logit_bias:
            biases = (lib.llama_logit_bias * len(params.logit_bias))(
                *(lib.llama_logit_bias(token, bias) for token, bias in params.logit_bias))
            add(lib.llama_sampler_init_logit_bias(self.n_vocab, len(params.logit_bias), biases))
        if penalised(params):
            add(lib.llama_sampler_init_penalties(self.n_vocab, self.context_per_slot, 1.0,
                                                 params.frequency_penalty,
                                                 params.presence_penalty))
        if params.temperature <= 0.0:
            add(lib.llama_sampler_init_greedy())
            return chain
        add(lib.llama_sampler_init_temp(params.temperature))
        if params.top_k > 0:
            add(lib.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(lib.llama_sampler_init_top_p(params.top_p, 1))
        add(lib.llama_sampler_init_dist(seed))
        return chain

    @staticmethod
    def plain_greedy(params: SamplingParams) -> bool:
        """Whether ``new_sampler`` makes a chain of llama.cpp's greedy sampler alone (no bias,
        no penalties): its token is then ``greedy_token``'s, drawn without the chain."""
        return params.temperature <= 0.0 and not params.logit_bias and not penalised(params)

    def greedy_token(self, batch_index: int) -> int:
        """The most likely token at ``batch_index``: the first of the largest logits, as
        llama.cpp's greedy sampler picks it, without copying the vocabulary into a candidate
        array (``llama_sampler_sample`` does that: ~50 us per token against ~6 us here)."""
        return int(self._logits_at(batch_index).argmax())

    # -- output grammars (thread-safe: they touch only the vocabulary) ----------------------

    def compile_grammar(self, grammar: str) -> Any:
        """Parse a GBNF grammar into a grammar sampler; ValueError when llama.cpp cannot."""
        with native_stderr_silenced():
            sampler = self.lib.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
        if not sampler:
            raise ValueError("llama.cpp could not compile the output grammar")
        return sampler

    def clone_sampler(self, sampler: Any) -> Any:
        return self.lib.llama_sampler_clone(sampler)

    def allowed_by(self, grammar: Any, tokens: np.ndarray) -> np.ndarray:
        """Which of ``tokens`` the grammar allows next (does not advance it)."""
        candidates = np.zeros(len(tokens), dtype=_TOKEN_DATA)
        candidates["id"] = tokens
        self.lib.llama_sampler_apply(grammar, ctypes.byref(self._candidates_of(candidates)))
        return candidates["logit"] != -np.inf

    def _candidates_of(self, data: np.ndarray) -> Any:
        return self.lib.llama_token_data_array(
            data.ctypes.data_as(ctypes.POINTER(self.lib.llama_token_data)), len(data), -1, False)

    def sample(self, sampler: Any, batch_index: int, grammar: Any = None,
               also_consider: tuple[int, ...] = (), stateless: bool = False) -> int | None:
        """Draw the next token from the logits at ``batch_index`` (and record it for penalties).

        With a grammar, the token is drawn without it first and only checked against it (one
        token: cheap). When the grammar rejects it, the draw is repeated among the most
        likely tokens that the grammar allows, looking at more of them (``SHORTLISTS``; the
        first time with ``also_consider``, the logit-biased ones) and only if it allows none of
        those over the whole vocabulary (whose mask costs milliseconds to a second, depending
        on the grammar).
        ``stateless``: the chain keeps no state of accepted tokens (no penalties), so the first
        draw may use llama.cpp's own (faster) one even if its token is then refused. Returns None
        when the grammar allows no token at all (an unsatisfiable schema): nothing is
        accepted then, so llama.cpp never sees a token its grammar forbids (which aborts)."""
        lib = self.lib
        if grammar is None:
            return int(lib.llama_sampler_sample(sampler, self.ctx, batch_index))
        logits = self._logits_at(batch_index)
        if stateless:
            token = int(lib.llama_sampler_sample(sampler, self.ctx, batch_index))
        else:
            token = self._draw(sampler, self._candidates(logits))
        if not self.allowed_by(grammar, np.array([token], dtype=np.int32))[0]:
            token = self._draw_widening(sampler, grammar, logits, also_consider)
            if token is None:
                return None
        lib.llama_sampler_accept(grammar, token)
        if not stateless:
            lib.llama_sampler_accept(sampler, token)
        return token

    def _draw_widening(self, sampler: Any, grammar: Any, logits: np.ndarray,
                       also_consider: tuple[int, ...]) -> int | None:
        """Draw among the most likely tokens the grammar allows, looking at more of them
        (``SHORTLISTS``, then the whole vocabulary) until it allows some. Each tier holds
        only the tokens the one before did not: the best allowed token is in the first tier
        that allows any."""
        checked = np.array([], dtype=np.int64)
        for size in SHORTLISTS:
            if size >= len(logits):
                break
            top = np.argpartition(-logits, size)[:size]
            ids = np.setdiff1d(top, checked, assume_unique=True)
            if not len(checked) and also_consider:
                ids = np.union1d(ids, np.array(also_consider, dtype=np.int64))
            checked = top
            token = self._draw_allowed(sampler, grammar, self._candidates(logits, ids))
            if token is not None:
                return token
        return self._draw_allowed(sampler, grammar, self._candidates(logits))

    def _draw(self, sampler: Any, candidates: np.ndarray) -> int:
        array = self._candidates_of(candidates)
        self.lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def _draw_allowed(self, sampler: Any, grammar: Any, candidates: np.ndarray) -> int | None:
        """Mask ``candidates`` with the grammar, then draw among what is left (if any)."""
        self.lib.llama_sampler_apply(grammar, ctypes.byref(self._candidates_of(candidates)))
        allowed = candidates[candidates["logit"] != -np.inf]
        if len(allowed) == 0:
            return None
        return self._draw(sampler, np.ascontiguousarray(allowed))

    def _candidates(self, logits: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        ids = self._all_ids if ids is None else ids.astype(np.int32)
        candidates = np.empty(len(ids), dtype=_TOKEN_DATA)
        candidates["id"] = ids
        candidates["logit"] = logits[ids]
        candidates["p"] = 0.0
        return candidates

    def logprobs(self, batch_index: int, token: int, top: int) -> TokenLogprob:
        """Log probability of ``token`` under the model's raw distribution at
        ``batch_index``, and the ``top`` most likely tokens there."""
        logits = self._logits_at(batch_index).astype(np.float64)
        peak = logits.max()
        logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
        best = np.argpartition(-logprobs, top)[:top] if top else np.array([], dtype=int)
        best = best[np.argsort(-logprobs[best])]
        alternatives = tuple(self._token_entry(int(t), float(logprobs[t])) for t in best)
        text, _, raw = self._token_entry(token, float(logprobs[token]))
        return TokenLogprob(text, float(logprobs[token]), raw, alternatives)

    def _token_entry(self, token: int, logprob: float) -> tuple[str, float, bytes]:
        raw = self.piece(token)
        return raw.decode("utf-8", errors="replace"), logprob, raw

    def free_sampler(self, sampler: Any) -> None:
        self.lib.llama_sampler_free(sampler)

    def close(self) -> None:
        if self.ctx:
            with native_stderr_silenced():
                if self.threadpool is not None:
                    self.threadpool.close()
                self.lib.llama_batch_free(self.batch)
                self.lib.llama_free(self.ctx)
                self.lib.llama_model_free(self.model)
            self.ctx = None
