"""The chat thread policy on a fake clock: it keeps the thread count that timed faster, per
situation, measures again after a while, and ignores steps that are not comparable."""

from __future__ import annotations

import pytest

from labs_api.engines.chat.thread_policy import MeasuredThreadPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Machine:
    """Runs steps: each lasts ``cost[threads]`` seconds of fake time."""

    def __init__(self, policy: MeasuredThreadPolicy, clock: FakeClock) -> None:
        self.policy, self.clock = policy, clock
        self.used: list[int] = []

    def steps(self, n: int, cost: dict[int, float], situation=(1, False),
              members: tuple = ("a",), steady: bool = True) -> None:
        for _ in range(n):
            threads = self.policy.threads_for_step(situation, members, steady)
            self.used.append(threads)
            self.clock.now += cost[threads]


def make(full: int = 2, **kwargs) -> tuple[MeasuredThreadPolicy, Machine]:
    clock = FakeClock()
    policy = MeasuredThreadPolicy(full, clock=clock, **kwargs)
    return policy, Machine(policy, clock)


@pytest.mark.parametrize(("cost", "expected"), [({2: 0.010, 1: 0.006}, 1),
                                                ({2: 0.006, 1: 0.010}, 2)])
def test_it_keeps_the_faster_thread_count(cost, expected):
    policy, machine = make(trial_steps=5)
    machine.steps(10, cost)  # 5 samples of each: still measuring on the 10th step
    assert set(machine.used[:10]) == {1, 2}
    machine.steps(50, cost)
    assert policy.chosen((1, False)) == expected
    assert machine.used[-40:].count(expected) >= 39  # at most one probe of the other


def test_situations_are_learnt_apart():
    """One stream faster with one thread, eight faster with two (as measured on one EPYC)."""
    policy, machine = make(trial_steps=4)
    eight = tuple("abcdefgh")
    machine.steps(30, {2: 0.010, 1: 0.007}, situation=(1, False))
    machine.steps(30, {2: 0.020, 1: 0.035}, situation=(8, False), members=eight)
    assert policy.chosen((1, False)) == 1
    assert policy.chosen((8, False)) == 2
    assert policy.chosen((1, True)) is None  # never seen: nothing assumed


def test_it_keeps_probing_and_follows_a_change_within_a_few_probes():
    policy, machine = make(trial_steps=5, probe_every=20, max_probe_every=20)
    machine.steps(11, {2: 0.010, 1: 0.005})  # a step is timed when the next one starts
    assert policy.chosen((1, False)) == 1
    machine.steps(200, {2: 0.010, 1: 0.005})
    # settled: one probe of the other count every 20 steps, nothing more
    assert machine.used[-200:].count(2) <= 200 // 20 + 1
    assert policy.chosen((1, False)) == 1
    # the machine changes (say the other load went away): two threads are now faster
    machine.steps(40, {2: 0.004, 1: 0.009})
    assert policy.chosen((1, False)) == 2
    assert machine.used[-20:].count(2) >= 19  # at most one probe of one thread


def test_a_slower_chosen_count_gives_way_without_waiting_for_a_probe():
    """Load arrives that slows the chosen count: its own recent times show it at once."""
    policy, machine = make(trial_steps=5, probe_every=1000)
    machine.steps(11, {2: 0.005, 1: 0.008})
    assert policy.chosen((1, False)) == 2
    machine.steps(10, {2: 0.020, 1: 0.008})
    assert policy.chosen((1, False)) == 1


def test_a_probe_that_loses_does_not_change_the_choice():
    policy, machine = make(trial_steps=5, probe_every=10)
    machine.steps(200, {2: 0.005, 1: 0.008})
    assert policy.chosen((1, False)) == 2
    assert machine.used[-100:].count(1) <= 100 // 10 + 1


def test_clearly_losing_probes_come_less_often_up_to_a_bound():
    """A lone stream on a quiet machine: one thread is 70% slower, every probe of it a loss."""
    policy, machine = make(trial_steps=5, probe_every=10, max_probe_every=80)
    machine.steps(1000, {2: 0.005, 1: 0.0085})
    assert policy.chosen((1, False)) == 2
    probes = [i for i, t in enumerate(machine.used) if t == 1][-5:]
    gaps = [b - a for a, b in zip(probes, probes[1:], strict=False)]
    assert gaps == [81] * 4  # waits doubled 10, 20, 40, then held at 80
    assert machine.used[-800:].count(1) <= 800 // 80 + 1


def test_after_backing_off_a_change_is_still_followed_within_the_bound():
    policy, machine = make(trial_steps=5, probe_every=10, max_probe_every=80)
    machine.steps(1000, {2: 0.005, 1: 0.0085})
    # one thread becomes the faster (only a probe can show it: its samples are old)
    machine.steps(100, {2: 0.005, 1: 0.004})
    assert policy.chosen((1, False)) == 1


def test_a_close_probe_keeps_the_short_wait():
    """Within the margin the two counts are near each other: keep looking often."""
    policy, machine = make(trial_steps=5, probe_every=10, max_probe_every=80)
    machine.steps(500, {2: 0.0050, 1: 0.0055})
    assert policy.chosen((1, False)) == 2
    assert machine.used[-200:].count(1) >= 200 // 11 - 1


def test_unsteady_steps_and_membership_changes_are_not_measured():
    """A prompt chunk, a join or an idle wait between steps would distort the timing."""
    policy, machine = make(trial_steps=3)
    clock = machine.clock
    for _ in range(10):  # prompt steps (not steady): slow with one thread, but unsteady
        machine.steps(1, {2: 0.001, 1: 5.0}, steady=False)
    assert policy.situations[(1, False)].samples == {}
    # a stream ends, the scheduler waits idle for 60 s, another starts: no sample either
    for i in range(10):
        threads = policy.threads_for_step((1, False), (f"request-{i}",), True)
        clock.now += 60.0 if threads == 1 else 0.001
    assert policy.situations[(1, False)].samples == {}
    assert policy.chosen((1, False)) is None


def test_members_are_compared_by_identity_not_equality():
    policy, _ = make(trial_steps=1)
    first, second = ["same"], ["same"]  # equal, not the same request
    policy.threads_for_step((1, False), (first,), True)
    policy.clock.now += 1.0  # type: ignore[attr-defined]
    policy.threads_for_step((1, False), (second,), True)
    assert policy.situations[(1, False)].samples == {}


def test_one_thread_has_nothing_to_choose():
    policy, machine = make(full=1, trial_steps=2)
    machine.steps(10, {1: 0.01})
    assert set(machine.used) == {1}
    assert policy.chosen((1, False)) == 1


def test_a_median_is_not_fooled_by_one_slow_step():
    policy, machine = make(trial_steps=5)
    costs = iter([0.005, 0.009] * 2 + [0.5, 0.009] + [0.005, 0.009] * 10)
    for _ in range(20):
        threads = policy.threads_for_step((1, False), ("a",), True)
        machine.used.append(threads)
        machine.clock.now += next(costs)
    # thread counts alternate 2, 1, 2, 1...: the single 0.5 s step fell on 2 threads
    assert policy.chosen((1, False)) == 2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        MeasuredThreadPolicy(0)
    with pytest.raises(ValueError):
        MeasuredThreadPolicy(2, trial_steps=0)
    with pytest.raises(ValueError):
        MeasuredThreadPolicy(2, probe_every=40, max_probe_every=20)


def test_prompt_steps_of_an_unlearnt_situation_use_every_thread():
    """No trial is spent on a step that is not measured (a prompt chunk)."""
    policy, machine = make(full=4, trial_steps=3)
    machine.steps(5, {4: 0.05, 3: 0.05}, steady=False)
    assert machine.used == [4] * 5
    assert policy.chosen((1, False)) is None
