"""How many threads llama.cpp decodes with, chosen by timing both choices on this machine.

llama.cpp's threads spin while they wait for each other, so a decode that uses every core can
be stalled by any other work on the machine (the HTTP side of the stream, another engine): on
one 2-core AMD EPYC a lone stream decoded faster with one thread fewer, on a 2-core Xeon slower.
No fixed rule holds on every machine, so the policy measures.

Each *situation* (how many sequences decode together, and whether another engine is computing)
is learnt on its own: during its first steps the policy alternates between all threads and one
fewer, timing each decode step, then keeps the one with the lower median of its recent step
times. It never stops measuring: every step with the chosen count refreshes that count's
recent times, and every ``probe_every`` steps one step runs with the other count. A probe that
beats the chosen count's median is followed by another at once, so when the machine's load
changes the choice follows within a few steps instead of after a fixed period. A probe that
loses clearly (slower than the chosen median by ``clear_margin``) doubles the wait before the
next one, up to ``max_probe_every`` steps: a one-thread step costs a lone stream ~70% more
than a two-thread one, so probing every 40 steps cost it 2-4% for nothing on a quiet machine;
a close or winning probe brings the wait back to ``probe_every``. Only steady
steps count: every slot feeding one token, and the same requests as at the step before, so
prompt chunks, joins and idle waits never enter a measurement.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("labs_api.llama_cpp")

_NEVER = float("inf")  # the median of a count not timed yet


@dataclass
class _Situation:
    """What is known about one situation: recent step times per thread count, the choice."""

    samples: dict[int, deque[float]] = field(default_factory=dict)
    #: The median of each count's samples, kept up to date as they change (a step changes
    #: only its own count's window, so only that median is computed again).
    medians: dict[int, float] = field(default_factory=dict)
    choice: int | None = None
    until_probe: int = 0  # steps with the chosen count before the next probe
    probe_wait: int = 0  # the wait set after the next probe (grows while probes lose clearly)


class MeasuredThreadPolicy:
    """``threads_for_step`` before each decode step: a thread count; it times the step from
    this call to the next one."""

    def __init__(self, full_threads: int, *, trial_steps: int = 12, probe_every: int = 40,
                 max_probe_every: int | None = None, clear_margin: float = 0.15,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if full_threads < 1 or trial_steps < 1 or probe_every < 1:
            raise ValueError("full_threads, trial_steps and probe_every must be >= 1")
        max_probe_every = probe_every * 16 if max_probe_every is None else max_probe_every
        if max_probe_every < probe_every or clear_margin < 0:
            raise ValueError("max_probe_every must be >= probe_every, clear_margin >= 0")
        self.full_threads = full_threads
        self.candidates = (full_threads,) if full_threads == 1 else (full_threads,
                                                                     full_threads - 1)
        self.trial_steps = trial_steps
        self.probe_every = probe_every
        self.max_probe_every = max_probe_every
        self.clear_margin = clear_margin
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
        if state.choice is None:
            # A prompt chunk is not measured: spend no trial on it (a trial of one thread
            # fewer would slow the longest step there is), use every thread.
            threads = self._next_trial(state) if steady else self.full_threads
        elif steady and len(self.candidates) > 1 and state.until_probe <= 0:
            threads = self._probe_candidate(state)
            state.until_probe = state.probe_wait or self.probe_every
        else:
            threads = state.choice
            state.until_probe -= 1
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

    def _probe_candidate(self, state: _Situation) -> int:
        """The other count with the fewest recent samples (with two candidates: the other)."""
        others = [t for t in self.candidates if t != state.choice]
        return min(others, key=lambda t: len(state.samples.get(t, ())))

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
        if state is None:
            return
        elapsed = now - started
        window = state.samples.get(threads)
        if window is None:
            window = state.samples[threads] = deque(maxlen=self.trial_steps)
        window.append(elapsed)
        medians = state.medians
        medians[threads] = statistics.median(window)
        if state.choice is None and any(
                len(state.samples.get(t, ())) < self.trial_steps for t in self.candidates):
            return
        best = min(self.candidates, key=lambda t: medians.get(t, _NEVER))
        if threads != state.choice and state.choice is not None:
            self._after_probe(state, elapsed, medians[state.choice])
        if best != state.choice:
            log.debug("thread policy: %s threads for situation %s (median step ms: %s)",
                      best, situation, {t: round(m * 1000, 2) for t, m in medians.items()})
            state.choice = best
            state.until_probe = state.probe_wait = self.probe_every

    def _after_probe(self, state: _Situation, elapsed: float, chosen_median: float) -> None:
        """Set when to probe next from how the probe that just ended did."""
        if elapsed < chosen_median:
            state.until_probe = 0  # the probe beat the chosen count: look again at once
            state.probe_wait = self.probe_every
        elif elapsed > chosen_median * (1 + self.clear_margin):
            wait = max(state.probe_wait, self.probe_every) * 2
            state.probe_wait = min(wait, self.max_probe_every)
            state.until_probe = state.probe_wait
        else:
            state.probe_wait = self.probe_every
