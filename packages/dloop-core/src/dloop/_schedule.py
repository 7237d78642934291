"""Per-event bookkeeping: when each trigger can next fire, so quiet steps cost nothing.

Step triggers (every_n_steps, at_step) sit in a heap keyed by the next step on which they
fire, time triggers (every_n_seconds, at_time) in a heap keyed by the next elapsed time.
The loop only compares the current step and time with the tops of those heaps; the heaps
are touched on steps where something fires, so the cost of a quiet step does not depend
on the number of events.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

from dloop._loop_events import LoopEvents

if TYPE_CHECKING:
    from dloop._event import Event
    from dloop._state import LoopState

_BUILT_IN = tuple(LoopEvents)

NEVER = 1 << 62
"""A step beyond any run: the next step of a schedule with no step trigger. Every step a
user gives is below it (SPEC rule 22)."""

DEADLINE_RATIO_LIMIT = 2.0**50
"""How many periods of every_n_seconds an elapsed time may hold: below it, ``k * period``
and ``(k + 1) * period`` are distinct floats for every ``k`` that can occur."""


def key_id(key: Hashable) -> str:
    """The JSON name of an event key in a state dict: the key itself if it is a string."""
    return key if isinstance(key, str) else repr(key)


def next_multiple_step(after_step: int, every: int) -> int:
    """The first step ``s > after_step`` with ``(s + 1) % every == 0``."""
    return ((after_step + 1) // every + 1) * every - 1


def next_deadline_index(elapsed: float, period: float, key: Hashable) -> int:
    """The smallest ``k >= 1`` with ``k * period > elapsed``, in constant time.

    Raises:
        ValueError: When successive deadlines around ``elapsed`` cannot be told apart in
            floating point (``elapsed / period`` near 2**52 or beyond), which would make
            the event fire on every step or never; the message names the event ``key``.
    """
    ratio = elapsed / period
    if ratio >= DEADLINE_RATIO_LIMIT:
        raise ValueError(
            f"events[{key!r}]: every_n_seconds={period!r} is too short for an elapsed time "
            f"of {elapsed!r} s: successive deadlines cannot be told apart in floating point "
            f"(the elapsed time may be at most {DEADLINE_RATIO_LIMIT:.0e} periods)"
        )
    k = max(1, math.floor(ratio) + 1)
    if k * period <= elapsed:
        k += 1
    elif k > 1 and (k - 1) * period > elapsed:
        k -= 1
    return k


class Schedule:
    """The compiled triggers of a loop's events and their position in the run."""

    __slots__ = (
        "_seq",
        "conditions",
        "epoch_triggers",
        "events",
        "singles",
        "step_heap",
        "time_heap",
    )
    _seq: itertools.count[int]

    def __init__(self, events: Mapping[Hashable, Event]) -> None:
        self.events = events
        self.epoch_triggers: list[tuple[int, Hashable]] = [
            (event.every_n_epochs, key)
            for key, event in events.items()
            if event.every_n_epochs is not None
        ]
        self.conditions: list[tuple[Hashable, Callable[[LoopState], bool]]] = [
            (key, event.condition_function)
            for key, event in events.items()
            if event.condition_function is not None
        ]
        # [step, seq, key, period]: period 0 for a one-shot at_step. Lists, so that the
        # loop reschedules a periodic trigger in place (see Run._decide).
        self.step_heap: list[list[Any]] = []
        # (elapsed deadline, seq, key, period, k): period 0.0 for a one-shot at_time.
        self.time_heap: list[tuple[float, int, Hashable, float, int]] = []
        self._seq = itertools.count()
        # The events of a step on which exactly one key fires, made once.
        self.singles: dict[Hashable, frozenset[Hashable]] = {
            key: frozenset((key,)) for key in [*events, *_BUILT_IN]
        }

    def _next_seq(self) -> int:
        return next(self._seq)

    def start(self, *, after_step: int, elapsed: float, saved: Mapping[str, Any]) -> None:
        """Position every trigger after ``after_step`` steps done and ``elapsed`` seconds.

        ``saved`` is the ``events`` part of a state dict (empty for a new run): it keeps
        every_n_seconds deadlines and at_time events that have not fired yet (with a
        ``sync`` they can lag behind the elapsed time). An event it does not name starts
        from the present: nothing in its past fires.
        """
        self.step_heap.clear()
        self.time_heap.clear()
        for key, event in self.events.items():
            if event.every_n_steps is not None:
                every = event.every_n_steps
                step = next_multiple_step(after_step, every)
                self.step_heap.append([step, self._next_seq(), key, every])
            for step in event.at_step or ():  # type: ignore[union-attr]
                if step > after_step:
                    self.step_heap.append([step, self._next_seq(), key, 0])
            record = saved.get(key_id(key), {})
            if event.every_n_seconds is not None:
                period = float(event.every_n_seconds)
                stored = record.get("every_n_seconds")
                if stored is not None and stored[0] == period:
                    k = int(stored[1])
                else:
                    k = next_deadline_index(elapsed, period, key)
                self.time_heap.append((k * period, self._next_seq(), key, period, k))
            if event.at_time is not None:
                # A saved record says which times have not fired (with a sync they follow
                # the agreed elapsed time, not this process's); without one, the times
                # after the elapsed time have not.
                saved_pending = record.get("at_time_pending")
                pending = None if saved_pending is None else set(saved_pending)
                for time in event.at_time:  # type: ignore[union-attr]
                    if after_step < 0 or (time > elapsed if pending is None else time in pending):
                        self.time_heap.append((time, self._next_seq(), key, 0.0, 0))
        heapq.heapify(self.step_heap)
        heapq.heapify(self.time_heap)

    @property
    def next_time(self) -> float:
        """The next elapsed time at which a time trigger fires (inf when none will)."""
        return self.time_heap[0][0] if self.time_heap else math.inf

    def fire_times(self, elapsed: float, fired: list[Hashable]) -> None:
        """Add the keys of the time triggers due at ``elapsed``; missed deadlines collapse."""
        heap = self.time_heap
        while heap and heap[0][0] <= elapsed:
            _, _, key, period, _ = heapq.heappop(heap)
            fired.append(key)
            if period:
                k = next_deadline_index(elapsed, period, key)
                heapq.heappush(heap, (k * period, self._next_seq(), key, period, k))

    def fire_epoch_end(self, epoch: int, fired: list[Hashable]) -> None:
        """Add the keys of the every_n_epochs triggers that fire at the end of ``epoch``."""
        for every, key in self.epoch_triggers:
            if (epoch + 1) % every == 0:
                fired.append(key)

    def time_state(self) -> dict[str, dict[str, Any]]:
        """The JSON-ready state of the time triggers, for ``Loop.state_dict``."""
        state: dict[str, dict[str, Any]] = {}
        for key, event in self.events.items():
            if event.at_time is not None:
                state.setdefault(key_id(key), {})["at_time_pending"] = []
        for deadline, _, key, period, k in sorted(self.time_heap, key=lambda entry: entry[:2]):
            record = state.setdefault(key_id(key), {})
            if period:
                record["every_n_seconds"] = [period, k]
            else:
                record["at_time_pending"].append(deadline)
        return state
