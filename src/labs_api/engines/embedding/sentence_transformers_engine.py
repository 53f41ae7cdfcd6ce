"""Embeddings with sentence-transformers on torch: bundled MiniLM, HuggingFace ids, directories."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from labs_api.engines.embedding.base import TASKS, EmbeddingEngine, EmbeddingTask, TokenCount
from labs_api.engines.optional import require

log = logging.getLogger("labs_api.embeddings")

EmbeddingDtype = Literal["fp32", "bf16"]  # never fp16: EmbeddingGemma's activations overflow it

# Prompt names a model may define for each task, in order of preference. sentence-transformers'
# own encode_query / encode_document look for the same names.
PROMPT_NAMES: dict[EmbeddingTask, tuple[str, ...]] = {
    "query": ("query",),
    "document": ("document", "passage", "corpus"),
    "similarity": ("STS", "sts", "similarity", "query"),
}
# The task sentence-transformers routes by (for models with a Router module).
ROUTE: dict[EmbeddingTask, str] = {"query": "query", "document": "document",
                                   "similarity": "query"}


def dtype_keyword() -> str:
    """transformers took ``torch_dtype`` before 4.56 and ``dtype`` since."""
    transformers = require("transformers")
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


class SentenceTransformerEngine(EmbeddingEngine):
    """A sentence-transformers model on CPU (or CUDA when present), in fp32 or bf16."""

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        dtype: EmbeddingDtype = "fp32",
        threads: int = 0,
        hf_token: str | None = None,
        local_files_only: bool = False,
        batch_size: int = 64,
    ) -> None:
        if dtype not in ("fp32", "bf16"):
            raise ValueError(f"embedding dtype must be fp32 or bf16, not {dtype!r}")
        self.torch = torch = require("torch")
        st = require("sentence_transformers", package="sentence-transformers")
        self.model_id = model_id
        self.threads = threads
        self.batch_size = batch_size
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = st.SentenceTransformer(
            source,
            device=device,
            token=hf_token,
            local_files_only=local_files_only,
            model_kwargs={dtype_keyword(): torch.float32 if dtype == "fp32" else torch.bfloat16},
        )
        self.model.eval()
        if getattr(self.model, "dtype", None) == torch.float16:  # a module ignored our dtype
            self.model.to(torch.float32)
        self.tokenizer = self.model.tokenizer
        dimension = getattr(self.model, "get_embedding_dimension", None)
        if dimension is None:  # its name before sentence-transformers 6
            dimension = self.model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())
        self.max_input_tokens = self._max_input_tokens()
        self.prompts = {task: self._prompt_for(task) for task in TASKS}
        self._special_tokens = self.tokenizer.num_special_tokens_to_add(pair=False)
        encode_parameters = inspect.signature(self.model.encode).parameters
        self._routes = "task" in encode_parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in encode_parameters.values())
        log.info(
            "embedding model %s: %d dimensions, at most %d tokens, %s on %s, prompts %s",
            model_id, self.dimensions, self.max_input_tokens, self.model.dtype, device,
            {task: prompt for task, prompt in self.prompts.items() if prompt} or "none",
        )

    def _max_input_tokens(self) -> int:
        limit = self.model.max_seq_length
        if not limit:
            limit = getattr(self.tokenizer, "model_max_length", None) or 512
        return int(min(limit, 1_000_000))  # tokenizers without a limit say 1e30

    def _prompt_for(self, task: EmbeddingTask) -> str:
        """The model's own prompt for ``task``, else its default prompt, else none."""
        prompts: dict[str, str] = dict(self.model.prompts or {})
        for name in PROMPT_NAMES[task]:
            if prompts.get(name):
                return prompts[name]
        default = self.model.default_prompt_name
        return prompts.get(default, "") if default else ""

    def prepare_thread(self) -> None:
        # torch keeps the thread count per OS thread: set it where the model runs.
        if self.threads:
            self.torch.set_num_threads(self.threads)

    def count_tokens(self, texts: Sequence[str], task: EmbeddingTask) -> list[TokenCount]:
        if not texts:
            return []
        prompt = self.prompts[task]
        model_view = self._lengths([prompt + text for text in texts], special=True)
        if not prompt:
            text_only = [n - self._special_tokens for n in model_view]
        else:
            text_only = self._lengths(list(texts), special=False)
        pairs = zip(text_only, model_view, strict=True)
        return [TokenCount(text=max(t, 0), model=m) for t, m in pairs]

    def _lengths(self, texts: list[str], *, special: bool) -> list[int]:
        encoded = self.tokenizer(texts, add_special_tokens=special, truncation=False,
                                 padding=False, return_attention_mask=False,
                                 return_token_type_ids=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str], task: EmbeddingTask) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        kwargs: dict[str, Any] = {"task": ROUTE[task]} if self._routes else {}
        vectors = self.model.encode(
            list(texts),
            prompt=self.prompts[task],
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
            **kwargs,
        )
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
