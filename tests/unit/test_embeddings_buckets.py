"""Length buckets: which inputs share a model call, and the features cut for each call."""

from __future__ import annotations

import numpy as np
import torch

from labs_api.engines.embedding.buckets import plan, take


def test_one_long_input_gets_a_call_of_its_own():
    calls = plan([20] * 30 + [256] + [20] * 33, max_rows=64)
    assert [list(c) for c in calls][0] == [30]
    assert sorted(int(i) for i in calls[1]) == [i for i in range(64) if i != 30]


def test_every_input_once_at_most_max_rows_a_call_longest_first():
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 250, size=300).tolist()
    calls = plan(lengths, max_rows=64)
    assert sorted(int(i) for c in calls for i in c) == list(range(300))
    assert all(1 <= len(c) <= 64 for c in calls)
    widths = [max(lengths[i] for i in c) for c in calls]
    assert widths == sorted(widths, reverse=True)
    padded = sum(len(c) * w for c, w in zip(calls, widths, strict=True))
    unbucketed = sum(len(c) * max(lengths[i] for i in c) for c in
                     np.array_split(np.argsort(lengths)[::-1], 5))
    assert padded <= unbucketed


def test_equal_lengths_stay_in_one_call_and_empty_is_empty():
    assert [len(c) for c in plan([12] * 64, max_rows=64)] == [64]
    assert plan([], max_rows=64) == []


def test_take_cuts_rows_and_padding_and_keeps_the_rest():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]])
    features = {"input_ids": ids, "attention_mask": (ids > 0).long(),
                "sentence_length": torch.tensor([3, 2, 4]), "prompt_length": 2}
    part = take(features, np.array([1, 0]), width=3)
    assert part["input_ids"].tolist() == [[4, 5, 0], [1, 2, 3]]
    assert part["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert part["sentence_length"].tolist() == [2, 3]
    assert part["prompt_length"] == 2
    left = take({"input_ids": np.array([[0, 1, 2], [3, 4, 5]])}, np.array([0]), 2,
                left_padded=True)
    assert left["input_ids"].tolist() == [[1, 2]]
