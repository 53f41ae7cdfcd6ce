"""How many threads llama.cpp decodes with, chosen by timing both choices on this machine.

llama.cpp's threads spin while they wait for each other, so a decode that uses every core can
be stalled by any other work on the machine (the HTTP side of the stream, another engine): on
one 2-core AMD EPYC a lone stream decoded faster with one thread fewer, on a 2-core Xeon slower.
No fixed rule holds on every machine, so the policy measures.

Each *situation* (how many sequences decode together, and whether another engine is computing)
is learnt on its own: during its first steps the policy alternates between all threads and one
fewer, timing each decode step, then keeps the one with the lower median step time; after
``recheck_steps`` steps in that situation it measures again (the machine's load changes). Only
steady steps count: every slot feeding one token, and the same requests as at the step before,
so prompt chunks, joins and idle waits never enter a measurement.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class _Situation:
    """What is known about one situation: samples per thread count, or the choice made."""

    samples: dict[int, list[float]] = field(default_factory=dict)
    choice: int | None = None
    steps_since_choice: int = 0


class MeasuredThreadPolicy:
    """``threads_for_step`` before each decode step: a thread count; it times the step from
    this call to the next one."""

    def __init__(self, full_threads: int, *, trial_steps: int = 12, recheck_steps: int = 4000,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if full_threads < 1 or trial_steps < 1 or recheck_steps < 1:
            raise ValueError("full_threads, trial_steps and recheck_steps must be >= 1")
        self.full_threads = full_threads
        self.candidates = (full_threads,) if full_threads == 1 else (full_threads,
                                                                     full_threads - 1)
        self.trial_steps = trial_steps
        self.recheck_steps = recheck_steps
        self.clock = clock
        self.situations: dict[Hashable, _Situation] = {}
        # The step in flight: (situation, who was decoding, threads, steady, started). Holding
        # the members themselves (not their ids) means a new request cannot pass for an old one.
        self._last: tuple[Hashable, Sequence[object], int, bool, float] | None = None

    def threads_for_step(self, situation: Hashable, members: Sequence[object],
                         steady: bool) -> int:
        """The thread count for the step about to run. ``situation``: what it is learnt under;
        ``members``: who decodes in it (the requests, compared by identity); ``steady``: every
        slot feeds exactly one token."""
        now = self.clock()
        self._close_previous(members, now)
        state = self.situations.setdefault(situation, _Situation())
        if state.choice is not None:
            state.steps_since_choice += 1
            if state.steps_since_choice > self.recheck_steps:  # time to measure again
                state.choice, state.samples = None, {}
        threads = state.choice if state.choice is not None else self._next_trial(state)
        self._last = (situation, members, threads, steady, now)
        return threads

    def chosen(self, situation: Hashable) -> int | None:
        """The thread count settled on for ``situation`` (None while measuring)."""
        state = self.situations.get(situation)
        return state.choice if state else None

    def _next_trial(self, state: _Situation) -> int:
        """Alternate between the candidates, the one with fewest samples first."""
        return min(self.candidates, key=lambda t: (len(state.samples.get(t, ())),
                                                   self.candidates.index(t)))

    def _close_previous(self, members: Sequence[object], now: float) -> None:
        if self._last is None:
            return
        situation, previous_members, threads, steady, started = self._last
        self._last = None
        # A step counts if it was pure decoding and nobody joined or left since: then nothing
        # but that step (and what competed with it) ran between its start and now.
        same = len(members) == len(previous_members) and all(
            a is b for a, b in zip(members, previous_members, strict=True))
        if not steady or not same:
            return
        state = self.situations.get(situation)
        if state is None or state.choice is not None:
            return
        state.samples.setdefault(threads, []).append(now - started)
        if all(len(state.samples.get(t, ())) >= self.trial_steps for t in self.candidates):
            state.choice = min(self.candidates,
                               key=lambda t: statistics.median(state.samples[t]))
            state.steps_since_choice = 0
