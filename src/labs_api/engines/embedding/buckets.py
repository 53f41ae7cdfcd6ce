"""Length buckets: a batch's inputs grouped by token length so short ones are not padded to the
longest one's length.

A model call on ``rows`` inputs padded to ``width`` tokens costs about ``rows * width`` token
positions plus a fixed overhead per call. ``plan`` sorts the inputs by length and splits them
into the runs of neighbours that minimise that total (at most ``max_rows`` each): 63 sentences of
20 tokens and one of 256 become two calls, not one call of 64 x 256.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: A model call's fixed cost, in token positions (MiniLM on 2 cores: about 0.5 ms a call,
#: 0.2 ms a position; set high so that near-equal lengths stay in one call).
CALL_OVERHEAD_TOKENS = 64


def plan(lengths: Sequence[int], max_rows: int,
         overhead: int = CALL_OVERHEAD_TOKENS) -> list[np.ndarray]:
    """Indices into ``lengths``, one array per model call, longest inputs first."""
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(-np.asarray(lengths), kind="stable")
    widths = np.asarray(lengths)[order]
    # best[j]: cheapest cost of the first j sorted inputs; cut[j]: where its last call starts.
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):
        starts = np.arange(max(0, end - max_rows), end)
        costs = best[starts] + overhead + (end - starts) * widths[starts]
        pick = int(np.argmin(costs))
        best[end], cut[end] = costs[pick], starts[pick]
    calls = []
    end = n
    while end > 0:
        calls.append(order[cut[end]:end])
        end = int(cut[end])
    return calls[::-1]


def take(features: dict[str, Any], rows: np.ndarray, width: int,
         left_padded: bool = False) -> dict[str, Any]:
    """The tokenizer's ``features`` for ``rows`` only, cut to ``width`` token positions.

    Tensors of shape (inputs, positions) lose rows and padding columns, (inputs,) ones lose
    rows; anything else (a prompt length, a task name) is kept as is.
    """
    total = int(features["input_ids"].shape[0])
    out: dict[str, Any] = {}
    for key, value in features.items():
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) == 0 or shape[0] != total:
            out[key] = value
            continue
        value = value[_index_like(value, rows)]
        if len(shape) >= 2:
            value = value[:, -width:] if left_padded else value[:, :width]
        out[key] = value
    return out


def _index_like(value: Any, rows: np.ndarray) -> Any:
    """``rows`` as an index for ``value`` (a torch tensor wants a torch index)."""
    if isinstance(value, np.ndarray):
        return rows
    import torch

    return torch.from_numpy(np.ascontiguousarray(rows))
