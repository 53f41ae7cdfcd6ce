"""The interface every embedding engine implements, and the values that cross it.

Engine methods block: they run on the batcher's worker thread (``batcher.py``), never on the
event loop, and know nothing of HTTP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

# What the text is for. Models with their own prompts (e.g. EmbeddingGemma) embed a search
# query differently from a document; "similarity" is the symmetric sentence-to-sentence case.
EmbeddingTask = Literal["query", "document", "similarity"]
TASKS: tuple[EmbeddingTask, ...] = ("query", "document", "similarity")


@dataclass(frozen=True)
class TokenCount:
    """How long one input is, counted two ways."""

    text: int  # tokens of the input's own text: what ``usage`` reports
    model: int  # tokens the model reads: the text plus the task's prompt and special tokens


class EmbeddingEngine(ABC):
    """Turns texts into unit-length float32 vectors. Every method blocks."""

    model_id: str
    dimensions: int  # length of each vector
    max_input_tokens: int  # longest input the model reads, prompt and special tokens included

    @abstractmethod
    def count_tokens(self, texts: Sequence[str], task: EmbeddingTask) -> list[TokenCount]:
        """The length of each text, without truncation."""

    @abstractmethod
    def embed(self, texts: Sequence[str], task: EmbeddingTask) -> np.ndarray:
        """A ``(len(texts), dimensions)`` float32 array of L2-normalised rows, in input order.

        Inputs longer than ``max_input_tokens`` are truncated; refusing them is the caller's
        choice, made with ``count_tokens`` first.
        """

    def prepare_thread(self) -> None:  # noqa: B027 - optional hook
        """Called once on the thread that will call ``embed``, before the first call."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model. The default does nothing."""


class InputTooLongError(ValueError):
    """An input is longer than the model reads, and truncation is off."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(
            f"Input {index} is {tokens} tokens long (with the model's prompt and special tokens); "
            f"this model reads at most {limit}. Shorten or split it."
        )
        self.index = index
        self.tokens = tokens
        self.limit = limit


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32, copy=False)


def shorten(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Matryoshka shortening: the first ``dimensions`` components, re-normalised to length 1."""
    if dimensions >= vectors.shape[1]:
        return vectors
    return normalize_rows(vectors[:, :dimensions])


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """The N×N cosine similarities of unit rows: exactly symmetric, 1.0 on the diagonal."""
    unit = normalize_rows(vectors).astype(np.float64)
    matrix = unit @ unit.T
    matrix = (matrix + matrix.T) / 2  # BLAS need not sum (i, j) and (j, i) in the same order
    np.clip(matrix, -1.0, 1.0, out=matrix)
    np.fill_diagonal(matrix, 1.0)
    return matrix
