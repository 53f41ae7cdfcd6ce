"""Padded batches for the transformers chat engine.

Waiting requests (up to ``max_batch``) start together: prompts are left-padded into one tensor
and every step decodes one token for each row with its own sampling parameters. A row that
finishes, or whose client went away, leaves the batch (its KV cache rows are dropped);
requests that arrive meanwhile wait in the bounded queue for the next batch.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from labs_api.engines.chat.admission import AdmissionQueue, GenerationRequest, deliver_final
from labs_api.engines.chat.base import GenerationChunk, SamplingParams, TokenLogprob
from labs_api.engines.chat.stop_text import StopSequenceFilter
from labs_api.engines.errors import EngineFailed, EngineUnavailable

log = logging.getLogger("labs_api.transformers")

GATHER_SECONDS = 0.02


@dataclass
class Row:
    """One request's state inside a batch."""

    request: GenerationRequest
    generator: Any
    counts: Any  # how often each token was generated (for the penalties)
    stops: StopSequenceFilter
    budget: int
    generated: list[int] = field(default_factory=list)
    sent_text: str = ""
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)

    def take_logprobs(self) -> list[TokenLogprob] | None:
        if self.request.params.logprobs is None:
            return None
        taken, self.pending_logprobs = self.pending_logprobs, []
        return taken


class PaddedBatchRunner:
    """Owns the model's worker thread: takes batches from ``queue`` and decodes them."""

    def __init__(self, engine: Any, queue: AdmissionQueue, max_batch: int) -> None:
        self.engine = engine
        self.torch = engine.torch
        self.queue = queue
        self.max_batch = max_batch
        self.running = 0
        self.largest_batch = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="transformers-batcher",
                                        daemon=True)
        self._thread.start()

    def has_room(self) -> bool:
        return self.running == 0

    def close(self) -> None:
        with self.queue.wakeup:
            self._stopping = True
            self.queue.wakeup.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self.queue.wakeup:
                if self._stopping:
                    break
                if not self.queue.waiting_count():
                    self.queue.wakeup.wait(timeout=0.5)
                    continue
            # Requests sent together arrive a few milliseconds apart: let them join the batch.
            time.sleep(GATHER_SECONDS)
            with self.queue.wakeup:
                batch = self.queue.take(self.max_batch)
                if not batch:
                    continue
                self.running = len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                self._decode(batch)
            except Exception as exc:  # keep the worker alive; fail this batch only
                log.exception("batch generation failed")
                for request in batch:
                    request.deliver(EngineFailed(f"Generation failed: {exc}"))
            finally:
                self.running = 0
        self.queue.fail_all(EngineUnavailable("The server is shutting down.", code="shutting_down"))

    def _new_row(self, request: GenerationRequest) -> Row:
        torch = self.torch
        generator = torch.Generator(device="cpu")
        if request.params.seed is not None:
            generator.manual_seed(request.params.seed)
        else:
            generator.seed()
        budget = min(request.params.max_tokens,
                     self.engine.context_length - len(request.prompt))
        return Row(request=request, generator=generator,
                   counts=torch.zeros(self.engine.vocab_size, dtype=torch.float32),
                   stops=StopSequenceFilter(request.params.stop), budget=budget)

    def _decode(self, batch: list[GenerationRequest]) -> None:
        torch, engine = self.torch, self.engine
        rows = [self._new_row(r) for r in batch]
        width = max(len(r.prompt) for r in batch)
        ids = torch.full((len(rows), width), engine.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, request in enumerate(batch):
            ids[i, width - len(request.prompt):] = torch.tensor(request.prompt)
            mask[i, width - len(request.prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        with torch.inference_mode():
            while rows:
                out = engine.model(input_ids=ids.to(engine.device),
                                   attention_mask=mask.to(engine.device),
                                   position_ids=positions.to(engine.device), use_cache=True,
                                   **{engine.cache_arg: cache})
                cache = getattr(out, engine.cache_arg)
                logits = out.logits[:, -1].float().cpu()
                keep, next_tokens = [], []
                for i, row in enumerate(rows):
                    if row.request.cancelled:
                        continue
                    token = sample_token(torch, logits[i], row.request.params, row.counts,
                                         row.generator)
                    if row.request.params.logprobs is not None:
                        row.pending_logprobs.append(self._logprob(logits[i], token,
                                                                  row.request.params.logprobs))
                    if not self._advance(row, token):
                        keep.append(i)
                        next_tokens.append(token)
                if not keep:
                    return
                if len(keep) < len(rows):
                    index = torch.tensor(keep)
                    cache.batch_select_indices(index.to(engine.device))
                    rows = [rows[i] for i in keep]
                    mask, positions = mask[index], positions[index]
                ids = torch.tensor(next_tokens).unsqueeze(1)
                mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
                positions = positions[:, -1:] + 1

    def _advance(self, row: Row, token: int) -> bool:
        """Record one sampled token and send its text. True when the row is finished."""
        request, engine = row.request, self.engine
        if token in engine.end_token_ids:
            if row.pending_logprobs:
                row.pending_logprobs.pop()  # the end-of-turn token is not part of the answer
            self._finish(row, "stop")
            return True
        row.generated.append(token)
        row.counts[token] += 1
        text = engine.tokenizer.decode(row.generated, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # else: an incomplete character, wait for more
            piece = row.stops.push(text[len(row.sent_text):])
            row.sent_text = text
            if piece:
                request.deliver(GenerationChunk(text=piece, logprobs=row.take_logprobs()))
            if row.stops.stopped:
                self._finish(row, "stop")
                return True
        if len(row.generated) >= row.budget:
            self._finish(row, "length")
            return True
        return False

    def _finish(self, row: Row, reason: str) -> None:
        deliver_final(row.request, row.stops.flush(), reason, len(row.generated),
                      row.take_logprobs())

    def _logprob(self, logits: Any, token: int, top: int) -> TokenLogprob:
        """``token``'s log probability under the raw distribution, and the ``top`` best."""
        logprobs = self.torch.log_softmax(logits.double(), dim=-1)
        entry = self._entry
        best = self.torch.topk(logprobs, top) if top else None
        alternatives = () if best is None else tuple(
            entry(int(t), float(v)) for v, t in zip(best.values, best.indices, strict=True))
        text, value, raw = entry(token, float(logprobs[token]))
        return TokenLogprob(text, value, raw, alternatives)

    def _entry(self, token: int, logprob: float) -> tuple[str, float, bytes]:
        text = self.engine.tokenizer.decode([token])
        return text, logprob, text.encode("utf-8")


def sample_token(
    torch: Any, logits: Any, params: SamplingParams, counts: Any, generator: Any
) -> int:
    """Pick the next token as OpenAI's parameters describe (penalties, temperature, top-k/p)."""
    logits = logits[: counts.shape[0]]
    if params.logit_bias:
        logits = logits.clone()
        for token, bias in params.logit_bias:
            logits[token] += bias
    if params.frequency_penalty or params.presence_penalty:
        logits = logits - counts * params.frequency_penalty
        logits = logits - (counts > 0).float() * params.presence_penalty
    if params.temperature <= 0.0:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[0]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs > params.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
