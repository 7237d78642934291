"""The running loop: its position, the per-step hot path, and the decisions on event steps.

``Loop`` (the public facade) holds a ``Run`` and the iterator made by ``Run.iterator``; the
iterator holds the ``Run`` but not the ``Loop``, so dropping the last reference to a loop
frees it at once (and puts back any stop-signal handlers) without waiting for the cycle
collector. The rooms a run uses: ``DataCursor`` (the data), ``TimeBudget`` (the clock and
``max_seconds``), ``Agreement`` (the ``sync``) and ``Schedule`` (the events); every decision
is taken here, in ``_decide``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Hashable, Iterator
from heapq import heappop, heapreplace
from typing import Any, Generic, Protocol, TypeVar

from dloop._agreement import Agreement
from dloop._budget import TimeBudget
from dloop._cursor import DataCursor, n_batches
from dloop._loop_events import LoopEvents
from dloop._progress import loop_state, total_steps
from dloop._schedule import NEVER, Schedule, next_multiple_step
from dloop._signals import StopSignals
from dloop._state import LoopState
from dloop._steps import CONTINUE, EMPTY, EPOCH_OVER, FINISHED, sized_steps, unsized_steps
from dloop._warnings import warn

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


EPOCH_START = LoopEvents.EPOCH_START
EPOCH_END = LoopEvents.EPOCH_END
TRAINING_END = LoopEvents.TRAINING_END
INTERRUPTED = LoopEvents.INTERRUPTED
PADDING = LoopEvents.PADDING


_speedups: Any
_gil_enabled: Callable[[], bool] = getattr(sys, "_is_gil_enabled", lambda: True)
if os.environ.get("DLOOP_PURE_PYTHON", "") not in ("", "0") or not _gil_enabled():
    # Forced off, or a free-threaded interpreter, which the accelerator is not made for.
    _speedups = None
else:
    try:
        from dloop import _speedups
    except ImportError:  # not built (no compiler, another interpreter): the pure path
        _speedups = None


class RunIterator(Iterator[tuple[T_co, frozenset[Hashable]]], Protocol[T_co]):
    """What ``Run.iterator`` returns: a generator of ``_steps``, or the C
    accelerator's ``Stepper`` (which also has ``settle()``)."""

    def close(self) -> None:
        """End the iteration and put back stop-signal handlers."""


class Run(Generic[T]):
    """Configuration and position of one loop; ``iterate`` is its generator."""

    __slots__ = (
        "__weakref__",
        "agreement",
        "budget",
        "cursor",
        "data_ended",
        "epoch",
        "epoch_finished",
        "epoch_first_step",
        "epoch_length_now",
        "finished",
        "finished_by_limit",
        "last_step",
        "max_epochs",
        "max_steps",
        "now",
        "pending_epoch",
        "pending_skip",
        "resumed_step",
        "saved_data",
        "saved_epoch_length",
        "saved_events",
        "schedule",
        "signals",
        "started",
        "step",
        "stop_requested",
        "time_cell",
    )

    def __init__(
        self,
        cursor: DataCursor[T],
        *,
        max_epochs: int | None,
        max_steps: int | None,
        budget: TimeBudget,
        schedule: Schedule,
        agreement: Agreement | None,
        signals: StopSignals,
    ) -> None:
        self.cursor = cursor
        self.max_epochs = NEVER if max_epochs is None else max_epochs
        self.max_steps = max_steps
        # Without max_steps, the last step is the last one below the bound of rule 22.
        self.last_step = NEVER - 1 if max_steps is None else max_steps - 1
        self.budget = budget
        self.schedule = schedule
        self.agreement = agreement
        self.signals = signals
        # Position: the last step done ("steps 0..step are done"), -1 before any.
        self.step = -1
        self.resumed_step = -1
        self.epoch = 0
        self.epoch_first_step = 0
        self.epoch_finished = False
        self.epoch_length_now: int | None = None
        self.saved_epoch_length: int | None = None
        self.now = 0.0
        self.saved_events: dict[str, Any] = {}
        self.saved_data: object = None
        self.stop_requested = False
        # The clock value at which a time decision is due, where the hot path looks.
        self.time_cell = [math.inf]
        self.started = False
        self.finished = False
        # A run that reached a limit (not a stop request) stays over after a resume,
        # unless the limit is raised.
        self.finished_by_limit = False
        # The run ended with its one-shot data (on every process, with a sync): it stays
        # over after a resume, whatever the limits.
        self.data_ended = False
        self.pending_epoch = 0
        self.pending_skip = 0

    # ------------------------------------------------------------------ queries

    @property
    def clock(self) -> Callable[[], float]:
        """The run's clock (read by the C accelerator)."""
        return self.budget.clock

    def elapsed(self) -> float:
        """Elapsed seconds as of the batch just yielded (the restored time before any)."""
        budget = self.budget
        # float(): the pure path keeps a quiet step's reading as the clock gave it.
        return float(self.now) - budget.start if self.started else budget.elapsed_offset

    def total_steps(self) -> int | None:
        """The global number of steps the run reaches, when known (see ``_progress``)."""
        return total_steps(self)

    def state(self) -> LoopState:
        """The ``LoopState`` of the batch just yielded."""
        return loop_state(self)

    def epoch_length(self) -> int | None:
        """The length of the current epoch (agreed, with a sync) or, before iterating, the
        one known: the saved one inside an epoch, else the data's."""
        if self.started:
            return self.epoch_length_now
        if self.step >= 0 and not self.epoch_finished:
            return self.saved_epoch_length
        return self.cursor.length_hint

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Only set flags, so that it is safe inside a signal handler."""
        self.stop_requested = True
        self.time_cell[0] = -math.inf

    def _set_time_cell(self) -> None:
        """Put the clock value at which a time decision is next due where the hot path
        looks (with a sync, time is decided on agreement steps only)."""
        self.time_cell[0] = (
            math.inf if self.agreement is not None else self.budget.due(self.schedule.next_time)
        )
        if self.stop_requested:  # a request that came while this ran must not be lost
            self.time_cell[0] = -math.inf

    def ends_before_start(
        self, elapsed: float | None = None, step_seconds: float | None = None
    ) -> bool:
        """A restored run that had already reached its limits, or whose one-shot data
        ended, yields nothing.

        A run that max_seconds ended is judged as it was then: with the expected duration
        of the steps it would have had to wait for; it goes on if max_seconds was raised.
        ``elapsed`` and ``step_seconds`` are the restored ones unless given (agreed).
        """
        budget = self.budget
        if elapsed is None:
            elapsed, step_seconds = budget.elapsed_offset, budget.step_seconds
        margin = 0.0
        if self.finished_by_limit and step_seconds:
            every = 1 if self.agreement is None else self.agreement.every_n_steps
            margin = step_seconds * every
        max_seconds = budget.max_seconds
        return (
            self.data_ended
            or self.step >= self.last_step
            or self.epoch + (1 if self.epoch_finished else 0) >= self.max_epochs
            or (max_seconds is not None and elapsed + margin >= max_seconds)
        )

    # ------------------------------------------------------------------ the loop

    def iterator(self) -> RunIterator[T]:
        """The iterator of the run: the C accelerator's over re-iterable data of known
        epoch length when it is built and not disabled (``DLOOP_PURE_PYTHON=1``), else the
        generator of ``_steps`` for the kind of data.

        The accelerator keeps ``step`` and ``now`` of quiet steps in its own fields until
        its ``settle()`` is called (``Loop`` calls it before reading them) or it calls back
        into this class.
        """
        if _speedups is not None and self.cursor.sized:
            stepper: RunIterator[T] = _speedups.Stepper(self, EMPTY)
            return stepper
        return sized_steps(self) if self.cursor.sized else unsized_steps(self)

    def _begin(self) -> bool:
        """Start iterating: stop signals, the clock's origin, the schedule, the position of
        the first epoch to open; False when a restored run had already ended."""
        self.epoch_length_now = self.epoch_length()  # until an epoch opens
        self.started = True
        self.signals.install(self.request_stop)
        step = self.step
        budget = self.budget
        self.now = budget.begin(step)
        agreement = self.agreement
        elapsed = step_seconds = None
        if agreement is not None:
            agreement.start(step)
            if step >= 0 and budget.max_seconds is not None:
                # Whether max_seconds left anything of a resumed run is decided on the
                # agreed (largest) elapsed time, as every process must end together.
                elapsed, step_seconds = agreement.agree_on_time(
                    budget.elapsed_offset, budget.step_seconds
                )
        if self.ends_before_start(elapsed, step_seconds):
            self.finished = True
            return False
        self.schedule.start(after_step=step, elapsed=budget.elapsed_offset, saved=self.saved_events)
        self._set_time_cell()
        self.pending_epoch = self.epoch
        self.pending_skip = 0
        if step >= 0:
            if self.epoch_finished:
                self.pending_epoch += 1
            else:
                self.pending_skip = step + 1 - self.epoch_first_step
        return True

    def _open_epoch(self) -> int:
        """Open the pending epoch after step ``self.step``: the data, its length and (with a
        sync) the agreement on where it ends; the next step to decide (its first)."""
        epoch, skip = self.pending_epoch, self.pending_skip
        first = self.step + 1 - skip
        cursor = self.cursor
        length = cursor.open(epoch, skip=skip, first=first, done=self.step + 1)
        self.epoch = epoch
        self.epoch_first_step = first
        self.epoch_finished = False
        self.pending_epoch = epoch + 1
        self.pending_skip = 0
        agreement = self.agreement
        if agreement is not None:
            step = self.step
            window = agreement.window(step, self.horizon)
            count, unknown = cursor.count_after(step, window)
            agreed = agreement.combine(count=count, unknown=unknown)
            cursor.settle(step, window, agreed)
            if cursor.pass_last == step and not cursor.one_shot:
                raise ValueError(
                    f"data yielded no batch in epoch {epoch} on at least one process (the "
                    "agreed epoch length is 0)"
                )
            if not cursor.one_shot:  # the agreed length, unknown until agreed
                length = None if cursor.pass_last == NEVER else cursor.pass_last - first + 1
        saved = self.saved_epoch_length
        if skip and saved is not None and length is not None and length != saved:
            raise ValueError(
                f"cannot resume inside epoch {epoch}: the state dict was saved when it had "
                f"{saved} batches, but it has {length} now (the epoch "
                "length may change only between epochs)"
            )
        self.epoch_length_now = length
        return self.step + 1

    def _open_sized_epoch(self) -> tuple[Iterator[T], int]:
        """For the C accelerator: open the pending epoch; its iterator and the next step to
        decide."""
        next_step = self._open_epoch()
        iterator = self.cursor.iterator
        assert iterator is not None
        return iterator, next_step

    @property
    def horizon(self) -> int:
        """The last step whose batch a look-ahead may read: the run's last step, and for
        re-iterable data one more, to know whether the epoch ends on the last step."""
        return self.last_step + (0 if self.cursor.one_shot else 1)

    def _end(self) -> None:
        """After the run's last step, when iterating goes on: the data of an epoch that
        ended on it must not have more batches than its ``len()`` (SPEC rule 25), as
        every earlier epoch is checked when the next opens."""
        if self.epoch_finished:
            self.cursor.close_pass(self.epoch)

    def _raise_short_epoch(self) -> None:
        """Raise the error for data that yielded fewer batches than the epoch length."""
        got = self.step + 1 - self.epoch_first_step
        if got == 0:
            raise ValueError(f"data yielded no batch in epoch {self.epoch}")
        raise ValueError(
            f"data yielded {n_batches(got)} in epoch {self.epoch}, fewer than the epoch length "
            f"{self.epoch_length_now} (from epoch_length= or len(data))"
        )

    def _no_batch(self) -> None:
        """The data had no batch where an epoch starts: an error for re-iterable data; for
        a one-shot stream (empty, or used up by a resume) the run ends with a warning."""
        if not self.cursor.one_shot:
            raise ValueError(f"data yielded no batch in epoch {self.epoch}")
        self.finished = True
        self.data_ended = True
        if self.epoch > 0 and self.step < self.epoch_first_step:
            # The stream ended with the previous (cut) epoch: the position stays at its
            # end, as the state dict of the last step said.
            self.epoch -= 1
            self.epoch_first_step = self.step + 1 - (self.cursor.cut or 1)
            self.epoch_finished = True
        warn(
            f"the one-shot data had no batch left after step {self.step}: the loop yields "
            f"nothing more ({self._limits()} not reached)"
        )

    # ------------------------------------------------------------------ decisions

    def _decide(
        self, step: int, now: object, floor: float
    ) -> tuple[frozenset[Hashable], int, int, float]:
        """The events of a step on which something may fire, the next such step, what the
        step means for the epoch and the run (``CONTINUE``, ``EPOCH_OVER``, ``FINISHED``),
        and the clock reading ``now`` as checked against ``floor``, the previous one.

        Only the parts that are due run: the step heap when its top is this step, the time
        decisions when the clock reached the time cell (a time trigger, the max_seconds
        threshold, or a stop request) or, with a sync, on agreement steps; the data's ends
        once the limits have spoken, so that a one-shot stream is not read past the run.
        """
        budget = self.budget
        if type(now) is not float or not floor <= now:  # not a number, nan, -inf, or back
            now = budget.check(now, floor, step)  # (inf and the 1e12 s bound: at the time cell)
        self.step = step
        self.now = now
        fired: list[Hashable] = []
        schedule = self.schedule
        cursor = self.cursor
        if step == self.epoch_first_step:
            fired.append(EPOCH_START)
        final = step >= self.last_step
        step_heap = schedule.step_heap
        while step_heap and step_heap[0][0] <= step:  # Schedule.fire_steps, inlined: hot
            entry = step_heap[0]  # [due step, seq, key, period]; rescheduled in place
            due = entry[0]
            if due == step:
                fired.append(entry[2])
            every = entry[3]
            if every:
                entry[0] = step + every if due == step else next_multiple_step(step, every)
                heapreplace(step_heap, entry)
            else:
                heappop(step_heap)

        timed = budget.max_seconds is not None
        if timed:
            budget.observe(step, now)
        agreement = self.agreement
        if agreement is None:
            if timed:
                self._set_time_cell()  # the max_seconds threshold moves with the estimate
            if now >= self.time_cell[0]:  # the time cell is at most start + 1e12 s
                if now >= budget.latest:
                    budget.check(now, floor, step)
                elapsed = now - budget.start
                final = self._decide_time(elapsed, budget.step_seconds, 1, fired) or final
                self._set_time_cell()
        elif now >= budget.latest:  # with a sync the time cell is inf: check here
            budget.check(now, floor, step)
        elif step == agreement.next_step:
            every = agreement.every_n_steps
            agreement.next_step = step + every
            window = agreement.window(step, self.horizon)
            count, unknown = cursor.count_after(step, window)
            agreed = agreement.combine(
                stop=self.stop_requested,
                elapsed=now - budget.start,
                step_seconds=budget.step_seconds or 0.0,
                count=count,
                unknown=unknown,
            )
            cursor.settle(step, window, agreed)
            if self.epoch_length_now is None and cursor.pass_last != NEVER and not cursor.one_shot:
                # The agreed end of an epoch whose length was unknown: known from here on.
                self.epoch_length_now = cursor.pass_last - self.epoch_first_step + 1
            self.stop_requested = self.stop_requested or agreed.stop
            final = self._decide_time(agreed.elapsed, agreed.step_seconds, every, fired) or final

        if cursor.plain:  # re-iterable data of known lengths, one process: the common case
            epoch_end = step == cursor.pass_last
            self.epoch_finished = epoch_end
            if epoch_end:
                fired.append(EPOCH_END)
                schedule.fire_epoch_end(self.epoch, fired)
                final = final or self.epoch + 1 >= self.max_epochs
        else:
            epoch_end, final = self._data_ends(step, final, fired)

        conditions = schedule.conditions
        if conditions:
            state = self.state()
            for key, condition in conditions:
                if condition(state):
                    fired.append(key)

        if final:
            fired.append(TRAINING_END)
            self.finished = True
            self.finished_by_limit = not self.stop_requested
            self.signals.restore()
            return frozenset(fired), NEVER, FINISHED, now

        next_step = step_heap[0][0] if step_heap else NEVER
        if self.last_step < next_step:
            next_step = self.last_step
        end = cursor.end if cursor.plain else cursor.next_end(step)
        if end < next_step:
            next_step = end
        if agreement is not None:
            next_step = min(next_step, agreement.next_step)
            self.time_cell[0] = math.inf  # a stop request waits for the agreement step
        if conditions or (timed and budget.step_seconds is None):
            next_step = step + 1  # conditions see every step; max_seconds must measure
        status = EPOCH_OVER if epoch_end else CONTINUE
        if not fired:
            return EMPTY, next_step, status, now
        if len(fired) == 1:
            return schedule.singles[fired[0]], next_step, status, now
        return frozenset(fired), next_step, status, now

    def _data_ends(self, step: int, final: bool, fired: list[Hashable]) -> tuple[bool, bool]:
        """For ``_decide``, beyond the common case: where the epoch and the data end with a
        look-ahead, a one-shot stream, a sync or padding; (epoch end, final)."""
        cursor = self.cursor
        last_epoch = self.epoch + 1 >= self.max_epochs
        if cursor.sized:
            epoch_end, data_end = step == cursor.pass_last, False
        else:
            epoch_end, data_end = cursor.ends(step, final=final, last_epoch=last_epoch)
        self.epoch_finished = epoch_end
        if epoch_end:
            fired.append(EPOCH_END)
            self.schedule.fire_epoch_end(self.epoch, fired)
            final = final or last_epoch
        if cursor.synced and ((epoch_end and not cursor.one_shot) or data_end):
            cursor.leave_unused(step, self.epoch)
        if data_end:
            self.data_ended = True
            if not final:
                warn(
                    f"the one-shot data ended at step {step}, before {self._limits()}: the "
                    "run ends there"
                )
            final = True
        if cursor.longest and cursor.padding(step):
            fired.append(PADDING)
        return epoch_end, final

    def _decide_time(
        self, elapsed: float, step_seconds: float | None, horizon: int, fired: list[Hashable]
    ) -> bool:
        """Fire the time triggers due at ``elapsed``; True when the run ends here.

        ``horizon`` is the number of steps until the next chance to stop: 1 without a
        sync, ``sync.every_n_steps`` with one.
        """
        self.schedule.fire_times(elapsed, fired)
        final = False
        if self.stop_requested:
            fired.append(INTERRUPTED)
            final = True
        return self.budget.ends(elapsed, step_seconds, horizon) or final

    def _limits(self) -> str:
        """The limits of the run, for messages: "max_steps=100", ..."""
        given = []
        if self.max_epochs != NEVER:
            given.append(f"max_epochs={self.max_epochs}")
        if self.max_steps is not None:
            given.append(f"max_steps={self.max_steps}")
        if self.budget.max_seconds is not None:
            given.append(f"max_seconds={self.budget.max_seconds:g}")
        return " and ".join(given) or "any limit"
