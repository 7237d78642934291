"""The running loop: position, the per-step hot path, and the decisions on event steps.

``Loop`` (the public facade) holds a ``Run`` and the generator made by ``Run.iterate``; the
generator holds the ``Run`` but not the ``Loop``, so dropping the last reference to a loop
frees it at once (and puts back any stop-signal handlers) without waiting for the cycle
collector.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator, Mapping
from heapq import heappop, heapreplace
from itertools import islice
from typing import Any, Generic, Protocol, TypeVar

from dloop._loop_events import LoopEvents
from dloop._schedule import NEVER, Schedule, next_multiple_step
from dloop._signals import StopSignals
from dloop._state import LoopState
from dloop._sync import Sync

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

EMPTY: frozenset[Hashable] = frozenset()
"""The events of a quiet step: one shared empty set, so quiet steps allocate nothing."""

_END = object()
_NOT_LOOKED = object()

EPOCH_START = LoopEvents.EPOCH_START
EPOCH_END = LoopEvents.EPOCH_END
TRAINING_END = LoopEvents.TRAINING_END
INTERRUPTED = LoopEvents.INTERRUPTED

_MICROSECONDS = 1_000_000

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
    """What ``Run.iterator`` returns: the generator ``Run.iterate``, or the C
    accelerator's ``Stepper`` (which also has ``settle()``)."""

    def close(self) -> None:
        """End the iteration and put back stop-signal handlers."""


def data_length(data: object) -> int | None:
    """``len(data)``, or None for data without a length (a DataLoader over an
    IterableDataset raises TypeError from ``len``)."""
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


class Run(Generic[T]):
    """Configuration and position of one loop; ``iterate`` is its generator."""

    __slots__ = (
        "__weakref__",
        "clock",
        "data",
        "elapsed_offset",
        "epoch",
        "epoch_finished",
        "epoch_first_step",
        "epoch_length",
        "epoch_length_now",
        "finished",
        "finished_by_limit",
        "last_decided_now",
        "last_decided_step",
        "last_step",
        "max_epochs",
        "max_seconds",
        "next_sync_step",
        "now",
        "one_shot",
        "pending_epoch",
        "pending_skip",
        "resumed_step",
        "saved_data",
        "saved_events",
        "schedule",
        "signals",
        "start",
        "started",
        "step",
        "step_seconds",
        "stop_requested",
        "sync",
        "time_cell",
    )

    def __init__(
        self,
        data: Iterable[T],
        *,
        max_epochs: int | None,
        max_steps: int | None,
        max_seconds: float | None,
        schedule: Schedule,
        epoch_length: int | None,
        clock: Callable[[], float],
        sync: Sync | None,
        signals: StopSignals,
        one_shot: bool,
    ) -> None:
        self.data = data
        self.max_epochs = NEVER if max_epochs is None else max_epochs
        self.last_step = NEVER if max_steps is None else max_steps - 1
        self.max_seconds = max_seconds
        self.schedule = schedule
        self.epoch_length = epoch_length
        self.clock = clock
        self.sync = sync
        self.signals = signals
        self.one_shot = one_shot
        # Position: the last step done ("steps 0..step are done"), -1 before any.
        self.step = -1
        self.resumed_step = -1
        self.epoch = 0
        self.epoch_first_step = 0
        self.epoch_finished = False
        self.epoch_length_now: int | None = None
        self.elapsed_offset = 0.0
        self.start = 0.0
        self.now = 0.0
        self.step_seconds: float | None = None
        self.saved_events: Mapping[str, Any] = {}
        self.saved_data: object = None
        self.stop_requested = False
        self.time_cell = [math.inf]
        self.started = False
        self.finished = False
        # A run that reached a limit (not a stop request) stays over after a resume,
        # unless the limit is raised.
        self.finished_by_limit = False
        self.next_sync_step = NEVER
        self.last_decided_step: int | None = None
        self.last_decided_now = 0.0
        self.pending_epoch = 0
        self.pending_skip = 0

    # ------------------------------------------------------------------ queries

    def elapsed(self) -> float:
        """Elapsed seconds as of the batch just yielded (the restored time before any)."""
        return self.now - self.start if self.started else self.elapsed_offset

    def total_steps(self) -> int | None:
        """The global number of steps the run reaches, when known in advance."""
        total = None if self.last_step == NEVER else self.last_step + 1
        if self.max_epochs != NEVER and self.epoch_length is not None:
            by_epochs = self.max_epochs * self.epoch_length
            total = by_epochs if total is None else min(total, by_epochs)
        return total

    def state(self) -> LoopState:
        step = self.step
        elapsed = self.elapsed()
        total = self.total_steps()
        fractions = []
        if total is not None:
            fractions.append((step + 1) / total)
        if self.max_seconds is not None:
            fractions.append(elapsed / self.max_seconds)
        progress = min(1.0, max(0.0, max(fractions))) if fractions else None
        etas = []
        if total is not None and step >= 1:
            etas.append(elapsed / step * (total - step))
        if self.max_seconds is not None:
            etas.append(self.max_seconds - elapsed)
        eta = max(0.0, min(etas)) if etas else None
        if self.finished:
            eta = 0.0
        return LoopState(
            step=step,
            epoch=self.epoch,
            epoch_step=step - self.epoch_first_step,
            elapsed=elapsed,
            epoch_length=self.epoch_length_now if self.started else self.epoch_length,
            total_steps=total,
            progress=progress,
            eta=eta,
        )

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Only set flags, so that it is safe inside a signal handler."""
        self.stop_requested = True
        self.time_cell[0] = -math.inf

    def _set_time_cell(self) -> None:
        """Put the next clock value at which a time decision is due where the hot path
        looks: the next time trigger or the point where max_seconds may end the run."""
        if self.sync is not None:
            self.time_cell[0] = math.inf
            return
        deadline = self.schedule.next_time
        if self.max_seconds is not None:
            deadline = min(deadline, self.max_seconds - (self.step_seconds or 0.0))
        self.time_cell[0] = self.start + deadline
        if self.stop_requested:  # a request that came while this ran must not be lost
            self.time_cell[0] = -math.inf

    def ends_before_start(self) -> bool:
        """A restored run that had already reached its limits yields nothing.

        A run that max_seconds ended is judged as it was then: with the expected duration
        of the steps it would have had to wait for; it goes on if max_seconds was raised.
        """
        margin = 0.0
        if self.finished_by_limit and self.step_seconds is not None:
            margin = self.step_seconds * (1 if self.sync is None else self.sync.every_n_steps)
        return (
            self.step >= self.last_step
            or self.epoch + (1 if self.epoch_finished else 0) >= self.max_epochs
            or (self.max_seconds is not None and self.elapsed_offset + margin >= self.max_seconds)
        )

    def _epoch_iterator(self, epoch: int, skip: int) -> Iterator[T]:
        """Call ``set_epoch``, then iterate the data from batch ``skip`` of the epoch."""
        data = self.data
        set_epoch = getattr(data, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        if not skip:
            return iter(data)
        iter_from = getattr(data, "iter_from", None)
        if callable(iter_from):
            return iter(iter_from(skip))
        iterator = iter(data)
        skipped = sum(1 for _ in islice(iterator, skip))
        if skipped < skip:
            raise ValueError(
                f"cannot resume: data yielded {skipped} batches in epoch {epoch}, but the "
                f"state dict says {skip} were already done"
            )
        return iterator

    # ------------------------------------------------------------------ the loop

    def iterator(self) -> RunIterator[T]:
        """The iterator of the run: the C accelerator's over data of known epoch length
        when it is built and not disabled (``DLOOP_PURE_PYTHON=1``), else ``iterate()``.

        The accelerator keeps ``step`` and ``now`` of quiet steps in its own fields until
        its ``settle()`` is called (``Loop`` calls it before reading them) or it calls back
        into this class.
        """
        if _speedups is not None and self.epoch_length is not None:
            stepper: RunIterator[T] = _speedups.Stepper(self, EMPTY)
            return stepper
        return self.iterate()

    def _begin(self) -> bool:
        """Start iterating: stop signals, the clock's origin, the schedule, the position of
        the first epoch to open; False when a restored run had already ended."""
        self.started = True
        self.signals.install(self.request_stop)
        now = self.clock()
        self.now = now
        self.start = now - self.elapsed_offset
        step = self.step
        self.last_decided_step = None
        if self.ends_before_start():
            self.finished = True
            return False
        self.schedule.start(after_step=step, elapsed=self.elapsed_offset, saved=self.saved_events)
        if self.sync is not None:
            self.next_sync_step = next_multiple_step(step, self.sync.every_n_steps)
        self._set_time_cell()
        self.pending_epoch = self.epoch
        self.pending_skip = 0
        if step >= 0:
            if self.epoch_finished:
                self.pending_epoch += 1
            else:
                self.pending_skip = step + 1 - self.epoch_first_step
        return True

    def _open_epoch(self) -> tuple[Iterator[T], int | None]:
        """Start the pending epoch after step ``self.step``: its iterator and length."""
        epoch, skip = self.pending_epoch, self.pending_skip
        length = self.epoch_length
        if length is None and not self.one_shot:
            length = data_length(self.data)
        iterator = self._epoch_iterator(epoch, skip)
        self.epoch = epoch
        self.epoch_first_step = self.step + 1 - skip
        self.epoch_length_now = length
        self.epoch_finished = False
        self.pending_epoch = epoch + 1
        self.pending_skip = 0
        if length == 0:
            raise ValueError(f"data yielded no batch in epoch {epoch} (its length is 0)")
        return iterator, length

    def _open_sized_epoch(self) -> tuple[Iterator[T], int, int]:
        """For the C accelerator: the pending epoch's iterator, its last step, and the next
        step to decide."""
        iterator, length = self._open_epoch()
        assert length is not None
        return iterator, self.epoch_first_step + length - 1, self.step + 1

    def _raise_short_epoch(self) -> None:
        """Raise the error for data that yielded fewer batches than the epoch length."""
        got = self.step + 1 - self.epoch_first_step
        if got == 0:
            raise ValueError(f"data yielded no batch in epoch {self.epoch}")
        raise ValueError(
            f"data yielded {got} batches in epoch {self.epoch}, fewer than the epoch length "
            f"{self.epoch_length_now} (from epoch_length= or len(data))"
        )

    def iterate(self) -> Generator[tuple[T, frozenset[Hashable]], None, None]:
        """Yield ``(batch, events)`` until the run ends; the hot path is marked below."""
        try:
            if not self._begin():
                return
            clock = self.clock
            cell = self.time_cell
            empty = EMPTY
            step = self.step
            while True:
                iterator, length = self._open_epoch()
                next_step = step + 1
                if length is not None:
                    last = self.epoch_first_step + length - 1
                    for batch in iterator:
                        step += 1
                        now = clock()
                        # --- hot path: a quiet step is two compares and two stores ---
                        if step < next_step and now < cell[0]:
                            self.step = step
                            self.now = now
                            yield batch, empty
                            continue
                        self.step = step
                        self.now = now
                        events, next_step = self._decide(step, now, step == last, last)
                        yield batch, events
                        if self.finished:
                            return
                        if step == last:
                            break
                    else:
                        self._raise_short_epoch()
                else:
                    # Unknown length: look one batch ahead to know which batch is the last.
                    upcoming = next(iterator, _END)
                    if upcoming is _END:
                        raise ValueError(f"data yielded no batch in epoch {self.epoch}")
                    # A one-shot iterator is not read past the run's last step (max_steps,
                    # or a stop requested without a sync): the batch would be lost to the
                    # caller.
                    no_peek = self.last_step if self.one_shot else NEVER
                    cautious = self.one_shot and self.sync is None
                    while True:
                        batch = upcoming  # type: ignore[assignment]
                        step += 1
                        if step == no_peek or (cautious and self.stop_requested):
                            upcoming = _NOT_LOOKED
                        else:
                            upcoming = next(iterator, _END)
                        now = clock()
                        if step < next_step and now < cell[0] and upcoming is not _END:
                            self.step = step
                            self.now = now
                            yield batch, empty
                            continue
                        self.step = step
                        self.now = now
                        ended = upcoming is _END
                        events, next_step = self._decide(step, now, ended, NEVER)
                        yield batch, events
                        if self.finished:
                            return
                        if ended:
                            break
        finally:
            self.signals.restore()

    def _decide(
        self, step: int, now: float, epoch_end: bool, epoch_last: int
    ) -> tuple[frozenset[Hashable], int]:
        """The events of a step on which something may fire, and the next such step.

        Only the parts that are due run: the step heap when its top is this step, the
        time decisions when the clock reached the time cell (a time trigger, the
        max_seconds threshold, or a stop request) or, with a sync, on agreement steps.
        """
        fired: list[Hashable] = []
        schedule = self.schedule
        if step == self.epoch_first_step:
            fired.append(EPOCH_START)
        final = step >= self.last_step
        if epoch_end:
            fired.append(EPOCH_END)
            schedule.fire_epoch_end(self.epoch, fired)
            final = final or self.epoch + 1 >= self.max_epochs
        self.epoch_finished = epoch_end
        step_heap = schedule.step_heap
        while step_heap and step_heap[0][0] <= step:
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

        measuring: bool | None = self.max_seconds is not None
        if measuring:
            measuring = self._measure_step(step, now)
        sync = self.sync
        if sync is None:
            if measuring:
                self._set_time_cell()  # the max_seconds threshold moves with the estimate
            if now >= self.time_cell[0]:
                elapsed = now - self.start
                final = self._decide_time(elapsed, self.step_seconds or 0.0, 1, fired) or final
                self._set_time_cell()
        elif step == self.next_sync_step:
            self.next_sync_step = step + sync.every_n_steps
            elapsed, step_seconds, stop = self._agree(sync, now)
            self.stop_requested = self.stop_requested or stop
            final = self._decide_time(elapsed, step_seconds, sync.every_n_steps, fired) or final

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
            return frozenset(fired), NEVER

        next_step = step_heap[0][0] if step_heap else NEVER
        if epoch_last < next_step:
            next_step = epoch_last
        if self.last_step < next_step:
            next_step = self.last_step
        if sync is not None:
            next_step = min(next_step, self.next_sync_step)
            self.time_cell[0] = math.inf  # a stop request waits for the agreement step
        if conditions or measuring is None:
            next_step = step + 1
        if not fired:
            return EMPTY, next_step
        if len(fired) == 1:
            return schedule.singles[fired[0]], next_step
        return frozenset(fired), next_step

    def _decide_time(
        self, elapsed: float, step_seconds: float, horizon: int, fired: list[Hashable]
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
        if self.max_seconds is not None and elapsed + horizon * step_seconds >= self.max_seconds:
            final = True
        return final

    def _measure_step(self, step: int, now: float) -> bool | None:
        """Update the expected duration of one step: the mean time per step since the
        last measurement, smoothed over recent measurements.

        Returns None on the first decided step of this run, which only sets the reference
        (the time before the first batch is not a step), so the next step must be decided
        too; else True.
        """
        last_step = self.last_decided_step
        self.last_decided_step = step
        previous_now, self.last_decided_now = self.last_decided_now, now
        if last_step is None:
            return None
        span = step - last_step
        if span > 0:
            recent = (now - previous_now) / span
            previous = self.step_seconds
            self.step_seconds = (
                recent if previous is None else previous + (recent - previous) * min(1.0, span / 4)
            )
        return True

    def _agree(self, sync: Sync, now: float) -> tuple[float, float, bool]:
        """Combine (stop requested, elapsed, step duration) over all processes."""
        flags = (
            1 if self.stop_requested else 0,
            max(0, round((now - self.start) * _MICROSECONDS)),
            max(0, round((self.step_seconds or 0.0) * _MICROSECONDS)),
        )
        agreed = sync.combine(flags)
        if len(agreed) != len(flags):
            raise ValueError(
                f"sync.combine returned {len(agreed)} values for {len(flags)} flags; it must "
                "return their element-wise maximum over all processes"
            )
        return agreed[1] / _MICROSECONDS, agreed[2] / _MICROSECONDS, agreed[0] > 0
