"""Chat on HuggingFace ids and local model directories through transformers + torch."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

from labs_api.engines.chat.admission import AdmissionQueue, QueuePolicy
from labs_api.engines.chat.base import ChatEngine, ChatMessage, GenerationChunk, SamplingParams
from labs_api.engines.chat.chat_template import CHATML_TEMPLATE, ChatTemplate, render_parts
from labs_api.engines.chat.transformers_batcher import PaddedBatchRunner
from labs_api.engines.errors import UnsupportedRequest
from labs_api.engines.optional import MissingBackendError, require

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
    """A causal LM with its tokenizer and chat template; concurrent requests run in padded
    batches of up to ``max_batch`` (see transformers_batcher)."""

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        device_map: str = "auto",
        torch_dtype: str = "bf16",
        load_in_4bit: bool = False,
        hf_token: str | None = None,
        max_batch: int = 8,
        queue_policy: QueuePolicy | None = None,
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
        self.vocab_size = int(self.model.config.vocab_size)
        self.end_token_ids = self._end_token_ids()
        self.pad_token_id = self._pad_token_id()
        self._fallback_template = (
            None
            if getattr(self.tokenizer, "chat_template", None)
            else ChatTemplate(CHATML_TEMPLATE)
        )
        # transformers 5.2x renamed past_key_values to cache, in the forward call and output.
        forward_args = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self.queue = AdmissionQueue(queue_policy or QueuePolicy(max_waiting=64, timeout_s=60),
                                    capacity=max_batch)
        self.batcher = PaddedBatchRunner(self, self.queue, max_batch)

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

    def _pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else min(self.end_token_ids, default=0)

    def _render(self, messages: list[ChatMessage]) -> str:
        if self._fallback_template is not None:
            return self._fallback_template.render(messages)
        return self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            tokenize=False,
        )

    def tokenize_prompt(self, messages: list[ChatMessage]) -> list[int]:
        """Markup with special tokens; each message's content as plain text only."""
        tokens: list[int] = []
        for text, markup in render_parts(self._render, messages):
            tokens += self.tokenizer(text, add_special_tokens=False,
                                     split_special_tokens=not markup)["input_ids"]
        return tokens

    def tokenize_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def tokenize_content(self, text: str, add_special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def token_pieces(self, tokens: list[int]) -> list[bytes]:
        return [self.tokenizer.decode([token]).encode("utf-8") for token in tokens]

    def detokenize(self, tokens: list[int]) -> str:
        """The text of ``tokens``, special tokens left out (the echo of a token-id prompt)."""
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def check_supported(self, params: SamplingParams) -> None:
        if params.constraint is not None:
            raise UnsupportedRequest(
                f"{params.constraint.param} needs constrained decoding (JSON output), which "
                "this server runs on GGUF models (llama.cpp engine) only.",
                param=params.constraint.param,
            )

    def stream_tokens(
        self, prompt: list[int], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        return self.queue.submit(prompt, params, self.batcher.has_room)

    async def stream_group(
        self, items: list[tuple[list[int], SamplingParams]]
    ) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """The generations of one request, admitted, cancelled and failed together."""
        for prompt, params in items:
            self.check_prompt(prompt, params)
        group = self.queue.submit_group(
            [(prompt, params, None) for prompt, params in items],
            lambda: self.batcher.max_batch if self.batcher.has_room() else 0)
        try:
            async for event in group:
                yield event
        finally:
            await group.aclose()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.batcher.close()
