"""Continuous batching for llama.cpp: every active request advances by one token per decode.

One scheduler thread owns the llama.cpp context. Requests wait in a bounded queue for a free
slot (one sequence id each); between decode steps, waiting requests join, finished and
cancelled ones leave. A slot keeps the KV cache of its last conversation, and a new request
goes to the slot whose cache shares the longest prefix with its prompt, so a follow-up turn
or a shared system prompt is not processed again.
"""

from __future__ import annotations

import codecs
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from labs_api.compute import CPU_WORK
from labs_api.engines.chat.admission import (
    AdmissionQueue,
    GenerationRequest,
    GroupItem,
    QueuePolicy,
    StepDeliveries,
    deliver_final,
)
from labs_api.engines.chat.base import GenerationChunk, SamplingParams, TokenLogprob
from labs_api.engines.chat.llama_cpp_model import DecodeError, LlamaCppModel, penalised
from labs_api.engines.chat.outlet import ChunkOutlet
from labs_api.engines.chat.prompt_cache import PromptCache, common_prefix
from labs_api.engines.chat.stop_text import StopSequenceFilter
from labs_api.engines.chat.thread_policy import MeasuredThreadPolicy
from labs_api.engines.errors import EngineFailed, EngineUnavailable
from labs_api.engines.progress import PROGRESS

log = logging.getLogger("labs_api.llama_cpp")


@dataclass
class Slot:
    """One sequence id of the context, and the request it is serving (if any)."""

    sequence: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV is in the cache
    request: GenerationRequest | None = None
    pending: list[int] = field(default_factory=list)  # tokens to feed in the next steps
    sampler: Any = None
    greedy: bool = False  # llama.cpp's greedy sampler alone, no grammar: take the argmax
    grammar: Any = None  # the request's own grammar sampler (owned by the slot while it runs)
    decoder: Any = None
    stops: StopSequenceFilter | None = None
    produced: int = 0
    reused: int = 0  # prompt tokens of the running request found in the cache
    budget: int = 0
    reserved: int = 0  # KV cells the running request may fill: its prompt and whole budget
    logits_index: int = -1  # where this slot's logits are in the batch just decoded
    last_used: float = 0.0
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet sent


class LlamaCppScheduler:
    """Runs the decode loop on its own thread; ``submit`` is called from the event loop."""

    def __init__(self, model: LlamaCppModel, slots: int, policy: QueuePolicy,
                 threads: int, prompt_cache_bytes: int = 0) -> None:
        self.model = model
        #: Finished conversations' KV in host memory (None: off). With the shared cache an
        #: idle slot is then also cleared: its cells would cost every running request's
        #: attention, since one cache's queries attend over all cells in use.
        self.prompt_cache = PromptCache(prompt_cache_bytes) if prompt_cache_bytes > 0 else None
        self.restored_prompt_tokens = 0
        self.full_threads = threads
        self.thread_policy = MeasuredThreadPolicy(threads)
        self.slots = [Slot(sequence=i) for i in range(slots)]
        self.queue = AdmissionQueue(policy, capacity=slots, release=model.free_sampler)
        self._stopping = False
        self.reused_prompt_tokens = 0
        self._thread = threading.Thread(target=self._run, name="llama-cpp-scheduler",
                                        daemon=True)
        self._thread.start()

    # -- called from the event loop -------------------------------------------------------------

    def submit(self, prompt: list[int], params: SamplingParams,
               grammar: Any = None) -> AsyncIterator[GenerationChunk]:
        """Queue a generation; raises 503 at once when the queue is full."""
        return self.queue.submit(prompt, params, self._has_free_slot, grammar)

    def submit_group(self, items: list[GroupItem], outlet: ChunkOutlet | None = None,
                     ) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """Queue the generations of one request together; 503 at once for all of them when
        they do not all fit. Each item's third element is its compiled grammar sampler (or
        None), which the scheduler then owns. ``outlet``: see ``AdmissionQueue``."""
        return self.queue.submit_group(items, self._free_slots, outlet)

    def active_count(self) -> int:
        return sum(1 for s in self.slots if s.request is not None)

    def waiting_count(self) -> int:
        return self.queue.waiting_count()

    def close(self) -> None:
        with self.queue.wakeup:
            self._stopping = True
            self.queue.wakeup.notify()
        self._thread.join(timeout=10)

    # -- the scheduler thread ---------------------------------------------------------------

    def _has_free_slot(self) -> bool:
        return any(s.request is None for s in self.slots)

    def _free_slots(self) -> int:
        return sum(1 for s in self.slots if s.request is None)

    def _run(self) -> None:
        wakeup = self.queue.wakeup
        while True:
            with wakeup:
                if self._stopping:
                    break
                free = sum(1 for s in self.slots if s.request is None)
                if self.queue.has_waiting():
                    for request in self.queue.take(free, self._fits_in_cache()):
                        slot = self._best_slot_for(request.prompt)
                        self._make_room(slot, request)
                        self._start(slot, request)
                if free == len(self.slots) and not self.active_count():
                    wakeup.wait(timeout=0.5)
                    continue
            try:
                self._step()
            except Exception as exc:  # keep the scheduler alive; fail what was running
                log.exception("decode step failed")
                for slot in self.slots:
                    if slot.request is not None:
                        self._fail(slot, EngineFailed(f"Generation failed: {exc}"))
        error = EngineUnavailable("The server is shutting down.", code="shutting_down")
        for slot in self.slots:
            self._fail(slot, error)
        self.queue.fail_all(error)

    def _fits_in_cache(self) -> Callable[[GenerationRequest], bool] | None:
        """With a shared cache: whether each request offered, in turn, still fits in what
        running requests (and those admitted before it in this turn) have not reserved."""
        if not self.model.unified:
            return None
        room = self._unreserved()

        def fits(request: GenerationRequest) -> bool:
            nonlocal room
            need = self._reservation(request)
            if need > room:
                return False  # it waits until running requests free their cells
            room -= need
            return True

        return fits

    def _reservation(self, request: GenerationRequest) -> int:
        """KV cells a request may fill: its prompt and its whole reply budget."""
        wanted = len(request.prompt) + request.params.max_tokens
        return min(wanted, self.model.context_per_slot)

    def _unreserved(self) -> int:
        """Cells of the shared cache not promised to a running request (idle slots' cached
        conversations are in there too, but they give way: ``_make_room``)."""
        return self.model.kv_tokens - sum(s.reserved for s in self.slots if s.request)

    def _make_room(self, slot: Slot, request: GenerationRequest) -> None:
        """With a shared cache, forget idle slots' cached conversations, least recently used
        first, until ``request`` (in ``slot``, whose own cache it may reuse) fits."""
        if not self.model.unified:
            return
        need = self._reservation(request)
        idle = sorted((s for s in self.slots if s.request is None and s is not slot
                       and s.cached), key=lambda s: s.last_used)
        held = sum(len(s.cached) for s in idle)
        while idle and need + held > self._unreserved():
            oldest = idle.pop(0)
            held -= len(oldest.cached)
            self.model.forget(oldest.sequence)
            oldest.cached = []

    def _best_slot_for(self, prompt: list[int]) -> Slot:
        """The free slot whose cached tokens share the longest prefix with ``prompt``;
        among equals, the one unused for longest (its cache is least likely to be wanted)."""
        free = [s for s in self.slots if s.request is None]
        return max(free, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))

    def _start(self, slot: Slot, request: GenerationRequest) -> None:
        """Give ``request`` the slot. Nothing slow here (it runs with the queue's lock held):
        the grammar was compiled before the request was queued."""
        model = self.model
        params = request.params
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        slot.grammar, request.prepared = request.prepared, None
        sampler = model.new_sampler(params, seed & 0xFFFFFFFF)
        self._restore_best(slot, request.prompt)
        # Keep the shared prefix; at least one prompt token must be fed to get logits.
        keep = min(common_prefix(slot.cached, request.prompt), len(request.prompt) - 1)
        model.forget(slot.sequence, keep)
        self.reused_prompt_tokens += keep
        slot.reused = keep
        slot.request = request
        slot.cached = request.prompt[:keep]
        slot.pending = request.prompt[keep:]
        slot.sampler = sampler
        slot.greedy = slot.grammar is None and model.plain_greedy(params)
        slot.logprobs = []
        slot.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        slot.stops = StopSequenceFilter(params.stop)
        slot.produced = 0
        slot.budget = min(params.max_tokens, model.context_per_slot - len(request.prompt))
        slot.reserved = len(request.prompt) + slot.budget
        slot.last_used = time.monotonic()

    def _restore_best(self, slot: Slot, prompt: list[int]) -> None:
        """Put the saved conversation sharing most of ``prompt`` in ``slot``, when it shares
        more than what the slot holds. Its own conversation is saved first."""
        cache = self.prompt_cache
        if cache is None:
            return
        found = cache.best_for(prompt)
        held = common_prefix(slot.cached, prompt)
        if found is None or found[1] <= held:
            return
        self._save(slot)
        entry, _ = found
        if self.model.restore_sequence(slot.sequence, entry.state):
            slot.cached = list(entry.tokens)
            self.restored_prompt_tokens += min(found[1], len(prompt) - 1)
        else:  # no room in the cache for all of it: evaluate the prompt instead
            slot.cached = []

    def _save(self, slot: Slot) -> bool:
        """Copy the slot's conversation into the host-memory cache (when it is on); whether
        the cache now holds it (not when it is larger than the whole budget)."""
        cache = self.prompt_cache
        if cache is None or not slot.cached:
            return False
        if cache.covers(slot.cached):
            return True
        return cache.put(slot.cached, self.model.save_sequence(slot.sequence))

    def _step(self) -> None:
        """One llama_decode: a token for each generating slot, prompt chunks for the others."""
        model = self.model
        active: list[Slot] = []
        steady = True  # every slot feeds one token (no prompt chunk in this step)
        for slot in self.slots:
            if slot.request is None:
                continue
            if slot.request.cancelled:
                self._release(slot)
                continue
            active.append(slot)
            steady = steady and len(slot.pending) == 1
        model.set_threads(self._thread_count(active, steady))
        model.batch_clear()
        room = model.batch_tokens
        if not steady:  # generating slots first (one token each): a long prompt never stalls them
            active.sort(key=lambda s: len(s.pending) > 1)
        for slot in active:
            slot.logits_index = -1
            take = min(len(slot.pending), room)
            if take == 0:
                continue
            for offset, token in enumerate(slot.pending[:take]):
                last = offset == take - 1 and take == len(slot.pending)
                index = model.batch_add(token, len(slot.cached), slot.sequence, last)
                slot.cached.append(token)
                if last:
                    slot.logits_index = index
            slot.pending = slot.pending[take:]
            room -= take
        if model.batch.n_tokens == 0:
            return
        try:
            model.decode()
        except DecodeError as exc:
            for slot in active:
                self._fail(slot, EngineFailed(str(exc)))
            return
        with StepDeliveries.gathered():  # the step's tokens go out on exit, first of all
            self._sample_all(active)
        PROGRESS.tick()

    def _sample_all(self, active: list[Slot]) -> None:
        model = self.model
        for slot in active:
            if slot.logits_index >= 0 and slot.request is not None:
                if slot.greedy:
                    self._advance(slot, model.greedy_token(slot.logits_index))
                    continue
                params = slot.request.params
                token = model.sample(
                    slot.sampler, slot.logits_index, slot.grammar,
                    also_consider=tuple(t for t, _ in params.logit_bias),
                    stateless=not penalised(params))
                if token is None:  # the output grammar allows nothing more: cut it here
                    self._finish(slot, "length")
                else:
                    self._advance(slot, token)

    def _thread_count(self, active: list[Slot], steady: bool) -> int:
        """All cores or one fewer, whichever ``MeasuredThreadPolicy`` timed faster on this
        machine for this many sequences, with or without another engine computing. llama.cpp's
        threads spin while they wait for each other, so other work (the HTTP side of a stream,
        an embedding batch) can stall a decode that uses every core; whether it does differs
        between machines (see thread_policy.py). ``active``: the generating slots."""
        return self.thread_policy.threads_for_step(
            (len(active), CPU_WORK.active > 0), [s.request for s in active], steady)

    def _advance(self, slot: Slot, token: int) -> None:
        """Handle one sampled token: end of turn, text (cut at stop sequences), or budget."""
        request = slot.request
        assert request is not None and slot.stops is not None
        if self.model.is_end_of_generation(token):
            self._finish(slot, "stop")
            return
        slot.produced += 1
        if request.params.logprobs is not None:
            slot.logprobs.append(
                self.model.logprobs(slot.logits_index, token, request.params.logprobs))
        text = slot.stops.push(slot.decoder.decode(self.model.text_piece(token)))
        if text:
            request.deliver(GenerationChunk(text=text, logprobs=self._take_logprobs(slot)))
        if slot.stops.stopped:
            self._finish(slot, "stop")
        elif slot.produced >= slot.budget:
            self._finish(slot, "length")
        else:
            slot.pending = [token]

    def _finish(self, slot: Slot, reason: str) -> None:
        request = slot.request
        assert request is not None and slot.stops is not None
        tail = slot.stops.push(slot.decoder.decode(b"", final=True)) + slot.stops.flush()
        deliver_final(request, tail, reason, slot.produced, self._take_logprobs(slot),
                      cached_tokens=slot.reused)
        self._release(slot)

    @staticmethod
    def _take_logprobs(slot: Slot) -> list[TokenLogprob] | None:
        if slot.request is None or slot.request.params.logprobs is None:
            return None
        taken, slot.logprobs = slot.logprobs, []
        return taken

    def _fail(self, slot: Slot, error: BaseException) -> None:
        if slot.request is not None:
            slot.request.deliver(error)
        self._release(slot, keep_cache=False)

    def _release(self, slot: Slot, keep_cache: bool = True) -> None:
        if slot.sampler is not None:
            self.model.free_sampler(slot.sampler)
            slot.sampler = None
        if slot.grammar is not None:
            self.model.free_sampler(slot.grammar)
            slot.grammar = None
        slot.request = None
        slot.reserved = 0
        slot.pending = []
        slot.last_used = time.monotonic()
        if keep_cache and self._save(slot) and self.model.unified:
            keep_cache = False  # saved: a shared cache's idle cells would cost attention
        if not keep_cache:
            self.model.forget(slot.sequence)
            slot.cached = []

