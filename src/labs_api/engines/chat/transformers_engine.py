"""Chat on HuggingFace ids and local model directories through transformers + torch."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labs_api.engines.chat.base import ChatEngine, ChatMessage, GenerationChunk, SamplingParams
from labs_api.engines.chat.chat_template import CHATML_TEMPLATE, ChatTemplate
from labs_api.engines.chat.stop_text import StopSequenceFilter
from labs_api.engines.chat.thread_stream import stream_from_thread
from labs_api.engines.optional import MissingBackendError, require
from labs_api.errors import ContextLengthError

log = logging.getLogger("labs_api.transformers")

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def resolve_dtype(torch: Any, name: str) -> Any:
    return "auto" if name == "auto" else getattr(torch, DTYPES[name])


def quantization_config(load_in_4bit: bool, dtype: Any) -> Any | None:
    """bitsandbytes 4-bit config, or a clear error where it cannot run."""
    if not load_in_4bit:
        return None
    torch = require("torch")
    if not torch.cuda.is_available():
        raise MissingBackendError(
            "LABS_LOAD_IN_4BIT=true needs a CUDA GPU (bitsandbytes 4-bit); none is available. "
            "Unset LABS_LOAD_IN_4BIT or use a GGUF file, which llama.cpp runs quantised on CPU."
        )
    require("bitsandbytes", extra="gpu")
    transformers = require("transformers")
    compute = dtype if dtype != "auto" else torch.bfloat16
    return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute)


class TransformersChatEngine(ChatEngine):
    """A causal LM with its tokenizer and chat template; one request at a time, token by token."""

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        device_map: str = "auto",
        torch_dtype: str = "bf16",
        load_in_4bit: bool = False,
        hf_token: str | None = None,
    ) -> None:
        self.torch = torch = require("torch")
        transformers = require("transformers")
        self.model_id = model_id
        dtype = resolve_dtype(torch, torch_dtype)
        kwargs: dict[str, Any] = {"dtype": dtype, "token": hf_token}
        quant = quantization_config(load_in_4bit, dtype)
        if quant is not None:
            kwargs["quantization_config"] = quant
        place_after_load = self._placement(device_map, kwargs)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, token=hf_token)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if place_after_load:
            self.model.to(place_after_load)
        self.model.eval()
        self.device = next(self.model.parameters()).device
        self.context_length = self._context_length()
        self._eos_ids = self._end_token_ids()
        self._fallback_template = (
            None
            if getattr(self.tokenizer, "chat_template", None)
            else ChatTemplate(CHATML_TEMPLATE)
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transformers")
        # transformers 5.2x renamed past_key_values to cache, in the forward call and output.
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"

    def _placement(self, device_map: str, kwargs: dict[str, Any]) -> str | None:
        """Use accelerate's device_map when installed; otherwise move the model ourselves."""
        try:
            require("accelerate", extra="gpu")
        except MissingBackendError:
            if device_map == "auto":
                return "cuda" if self.torch.cuda.is_available() else "cpu"
            if device_map.split(":")[0] in {"cpu", "cuda", "mps", "xpu"}:
                return device_map
            raise
        kwargs["device_map"] = device_map
        return None

    def _context_length(self) -> int:
        config = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    def _end_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        return ids

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        if self._fallback_template is not None:
            text = self._fallback_template.render(messages)
        else:
            text = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                tokenize=False,
            )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

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
        torch = self.torch
        generator = torch.Generator(device="cpu")
        if params.seed is not None:
            generator.manual_seed(params.seed)
        else:
            generator.seed()
        budget = min(params.max_tokens, self.context_length - len(prompt))
        stops = StopSequenceFilter(params.stop)
        generated: list[int] = []
        sent_text = ""
        finish = "length"
        counts = torch.zeros(self.model.config.vocab_size, dtype=torch.float32)
        input_ids = torch.tensor([prompt], device=self.device)
        past = None
        with torch.inference_mode():
            while len(generated) < budget:
                if cancelled.is_set():
                    return
                out = self.model(input_ids=input_ids, use_cache=True, **{self._cache_arg: past})
                past = getattr(out, self._cache_arg)
                logits = out.logits[0, -1].float().cpu()
                token = sample_token(torch, logits, params, counts, generator)
                if token in self._eos_ids:
                    finish = "stop"
                    break
                generated.append(token)
                counts[token] += 1
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # an incomplete character: wait for the next token
                    input_ids = torch.tensor([[token]], device=self.device)
                    continue
                piece = stops.push(text[len(sent_text):])
                sent_text = text
                if piece:
                    yield GenerationChunk(text=piece)
                if stops.stopped:
                    finish = "stop"
                    break
                input_ids = torch.tensor([[token]], device=self.device)
        yield GenerationChunk(
            text=stops.flush(),
            finish_reason=finish,  # type: ignore[arg-type]
            prompt_tokens=len(prompt),
            completion_tokens=len(generated),
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def sample_token(
    torch: Any, logits: Any, params: SamplingParams, counts: Any, generator: Any
) -> int:
    """Pick the next token as OpenAI's parameters describe (penalties, temperature, top-k/p)."""
    logits = logits[: counts.shape[0]]
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
