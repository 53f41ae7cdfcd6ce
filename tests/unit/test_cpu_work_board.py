"""The CPU-work board: each worker's count, and the sum every worker reads before a decode."""

from __future__ import annotations

import pytest

from labs_api.compute import CpuWork, CpuWorkBoard


@pytest.fixture
def board():
    shared = CpuWorkBoard(workers=16)
    yield shared
    shared.close()


def test_every_attached_counter_is_seen_by_every_reader(board):
    first, last, reader = CpuWork(), CpuWork(), CpuWork()
    first.attach(board.spec(0))
    last.attach(board.spec(15))
    reader.attach(board.spec(7))
    assert reader.active == 0
    with first.running(), last.running():
        assert reader.active == 2
        with last.running():
            assert (first.active, reader.active) == (3, 3)
    assert reader.active == 0


def test_unattached_work_counts_only_itself(board):
    alone, attached = CpuWork(), CpuWork()
    attached.attach(board.spec(3))
    with alone.running():
        assert alone.active == 1
        assert attached.active == 0


def test_a_counter_past_the_board_is_refused(board):
    with pytest.raises(IndexError):
        board.spec(16)
