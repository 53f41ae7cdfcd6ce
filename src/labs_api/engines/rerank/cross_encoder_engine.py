"""A sentence-transformers ``CrossEncoder``: a HuggingFace id or a local directory."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from labs_api.engines.optional import require
from labs_api.engines.progress import PROGRESS
from labs_api.engines.rerank.base import RerankEngine, RerankScores

#: Pairs in one forward pass.
BATCH_SIZE = 32


class CrossEncoderEngine(RerankEngine):
    def __init__(self, model_id: str, source: str, *, threads: int = 0,
                 hf_token: str | None = None) -> None:
        super().__init__()
        torch = require("torch")
        st = require("sentence_transformers", package="sentence-transformers")
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model_id = model_id
        self.model = st.CrossEncoder(source, device="cpu", token=hf_token)
        # sentence-transformers 5+ calls it max_seq_length (max_length is deprecated).
        limit = (getattr(self.model, "max_seq_length", None) or self.model.max_length
                 or getattr(self.model.tokenizer, "model_max_length", 512))
        self.max_input_tokens = int(min(limit, 8192))
        labels = int(getattr(self.model, "num_labels", 1))
        if labels != 1:
            raise ValueError(f"{source} is not a reranker: a cross-encoder for reranking has "
                             f"one output label, this one has {labels}")
        self._identity = self._activation_keyword()

    def _activation_keyword(self) -> str:
        """sentence-transformers 4+ names it ``activation_fn``, 3.x ``activation_fct``."""
        parameters = inspect.signature(self.model.predict).parameters
        return "activation_fn" if "activation_fn" in parameters else "activation_fct"

    def score(self, query: str, documents: Sequence[str], raw: bool) -> RerankScores:
        pairs = [(query, document) for document in documents]
        options: dict[str, Any] = {"batch_size": BATCH_SIZE, "show_progress_bar": False,
                                   "convert_to_numpy": True}
        if raw:
            options[self._identity] = self._torch.nn.Identity()
        scores: list[float] = []
        with self._torch.inference_mode():
            for start in range(0, len(pairs), BATCH_SIZE):
                batch = self.model.predict(pairs[start:start + BATCH_SIZE], **options)
                scores += [float(s) for s in batch.reshape(-1)]
                PROGRESS.tick()  # a long request is busy, not stuck, to the supervisor
        return RerankScores(scores, self._count(pairs))

    def _count(self, pairs: list[tuple[str, str]]) -> int:
        encoded = self.model.tokenizer([q for q, _ in pairs], [d for _, d in pairs],
                                       truncation=True, max_length=self.max_input_tokens)
        return sum(len(ids) for ids in encoded["input_ids"])
