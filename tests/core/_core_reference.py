"""A plain reference model of SPEC rules 1-11 and 18, and the data doubles the core tests share.

The model walks the run step by step and computes each step's events straight from the
rules, with no scheduling cleverness, so that it is obviously right; tests compare
``Loop`` against it. Times in the tests are multiples of 1/4 second, so every sum of
durations is exact in floating point and elapsed times compare with ``==``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from dloop import Event, Loop, LoopEvents, LoopState
from dloop.testing import ManualClock

EPOCH_START = LoopEvents.EPOCH_START
EPOCH_END = LoopEvents.EPOCH_END
TRAINING_END = LoopEvents.TRAINING_END
INTERRUPTED = LoopEvents.INTERRUPTED

Durations = Callable[[int], float]
"""Seconds spent in the body of each step (by its 0-based step number)."""


def _no_time(step: int) -> float:
    return 0.0


class Record(NamedTuple):
    """What one step of a run looks like from inside the loop body."""

    step: int
    epoch: int
    epoch_step: int
    elapsed: float
    batch: object
    events: frozenset[Hashable]


def steady(seconds: float) -> Durations:
    """Every step takes ``seconds``."""
    return lambda step: seconds


def cycle(seconds: Sequence[float]) -> Durations:
    """Step ``s`` takes ``seconds[s % len(seconds)]``."""
    values = tuple(seconds)
    return lambda step: values[step % len(values)]


def as_tuple(value: object) -> tuple[Any, ...]:
    """A trigger given as one value or a collection, as a tuple."""
    if isinstance(value, Collection) and not isinstance(value, str):
        return tuple(value)
    return (value,)


BUILT_IN_EVENTS: frozenset[Hashable] = frozenset(LoopEvents)
"""Every ``LoopEvents`` member."""


def named(events: frozenset[Hashable]) -> list[str]:
    """Events as sorted strings (``repr`` for built-in ones), for traces that go through JSON."""
    return sorted(repr(event) if event in BUILT_IN_EVENTS else str(event) for event in events)


def reference_run(
    batches: Callable[[int], Sequence[object]],
    *,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    events: Mapping[Hashable, Event] | None = None,
    durations: Durations = _no_time,
    stop_in_body_of: int | None = None,
) -> list[Record]:
    """The records an uninterrupted run yields, computed rule by rule.

    Args:
        batches: The batches of each epoch, by epoch number.
        max_epochs: As for ``Loop``.
        max_steps: As for ``Loop``.
        max_seconds: As for ``Loop``; the expected duration of a step is the true one, so
            only use it with durations that are steady after the first step.
        events: As for ``Loop``; a ``condition_function`` sees step, epoch, epoch_step and
            elapsed (the other fields are None).
        durations: Seconds spent in the body of each step (advanced after the yield).
        stop_in_body_of: Request a stop inside the body of this step (-1: before iterating).
    """
    named_events = dict(events or {})
    seconds_index = {key: 1 for key, event in named_events.items() if event.every_n_seconds}
    pending_times = {
        key: set(as_tuple(event.at_time))
        for key, event in named_events.items()
        if event.at_time is not None
    }
    records: list[Record] = []
    step = -1
    elapsed = 0.0
    epoch = 0
    while max_epochs is None or epoch < max_epochs:
        epoch_batches = batches(epoch)
        assert epoch_batches, "the reference model needs a batch in every epoch"
        for index, batch in enumerate(epoch_batches):
            step += 1
            if step > 0:
                elapsed += durations(step - 1)
            last_of_epoch = index == len(epoch_batches) - 1
            fired: set[Hashable] = set()
            if index == 0:
                fired.add(EPOCH_START)
            if last_of_epoch:
                fired.add(EPOCH_END)
            state = LoopState(
                step=step,
                epoch=epoch,
                epoch_step=index,
                elapsed=elapsed,
                epoch_length=None,
                total_steps=None,
                progress=None,
                eta=None,
            )
            for key, event in named_events.items():
                if event.every_n_steps is not None and (step + 1) % event.every_n_steps == 0:
                    fired.add(key)
                if event.at_step is not None and step in as_tuple(event.at_step):
                    fired.add(key)
                if (
                    event.every_n_epochs is not None
                    and last_of_epoch
                    and (epoch + 1) % event.every_n_epochs == 0
                ):
                    fired.add(key)
                if event.every_n_seconds is not None:
                    period = event.every_n_seconds
                    k = seconds_index[key]
                    if elapsed >= k * period:
                        fired.add(key)
                        while k * period <= elapsed:
                            k += 1
                        seconds_index[key] = k
                if event.at_time is not None:
                    due = {time for time in pending_times[key] if time <= elapsed}
                    if due:
                        fired.add(key)
                        pending_times[key] -= due
                if event.condition_function is not None and event.condition_function(state):
                    fired.add(key)
            interrupted = stop_in_body_of is not None and step == stop_in_body_of + 1

            def expected(step: int) -> float:
                # The body of the first step is never measured (it may compile or warm up),
                # so steps 0 and 1 have no estimate; later, with the steady durations (after
                # the first) this model is for, the estimate is the previous step's duration.
                return durations(step - 1) if step > 1 else 0.0

            if interrupted:
                fired.add(INTERRUPTED)
            final = (
                interrupted
                or (max_steps is not None and step + 1 >= max_steps)
                or (last_of_epoch and max_epochs is not None and epoch + 1 >= max_epochs)
                or (max_seconds is not None and elapsed + expected(step) >= max_seconds)
            )
            if final:
                fired.add(TRAINING_END)
            records.append(Record(step, epoch, index, elapsed, batch, frozenset(fired)))
            if final:
                return records
        epoch += 1
    return records


def drive(
    loop: Loop[Any],
    clock: ManualClock,
    durations: Durations = _no_time,
    *,
    stop_in_body_of: int | None = None,
    until_step: int | None = None,
) -> list[Record]:
    """Iterate ``loop``, spending ``durations(step)`` of ``clock`` in each body.

    Stops early (``break``) after the body of ``until_step`` when given; requests a stop
    in the body of ``stop_in_body_of`` (before iterating for -1).
    """
    records: list[Record] = []
    if stop_in_body_of == -1:
        loop.request_stop()
    for batch, events in loop:
        state = loop.state
        records.append(
            Record(state.step, state.epoch, state.epoch_step, state.elapsed, batch, events)
        )
        clock.advance(durations(state.step))
        if state.step == stop_in_body_of:
            loop.request_stop()
        if state.step == until_step:
            break
    return records


def collect_batches(loop: Loop[Any], into: list[object]) -> None:
    """Iterate ``loop``, appending each batch to ``into`` (kept when iterating raises)."""
    for batch, _ in loop:
        into.append(batch)


def fired_steps(records: Sequence[Record], key: Hashable) -> list[int]:
    """The steps of ``records`` on which ``key`` fired."""
    return [record.step for record in records if key in record.events]


class EpochData:
    """Re-iterable data with no length whose batches are ``(epoch, index)``.

    ``set_epoch`` sets the epoch the next pass yields, so a loop that forgets to call it
    yields wrong batches. Every call and every batch produced is recorded in ``log`` and
    ``produced``.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self.epoch = 0
        self.log: list[tuple[str, int]] = []
        self.produced: list[tuple[int, int]] = []

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass yield the batches of ``epoch``."""
        self.log.append(("set_epoch", epoch))
        self.epoch = epoch

    def _batches(self, start: int) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in range(start, self.length):
            self.produced.append((epoch, index))
            yield (epoch, index)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self.log.append(("iter", self.epoch))
        return self._batches(0)


class SizedEpochData(EpochData):
    """``EpochData`` with ``len``."""

    def __len__(self) -> int:
        return self.length


class FastSkipData(SizedEpochData):
    """``SizedEpochData`` with ``iter_from``, the adapter hook for a fast resume."""

    def iter_from(self, start: int) -> Iterator[tuple[int, int]]:
        """Iterate the current epoch from batch ``start`` without producing the others."""
        self.log.append(("iter_from", start))
        return self._batches(start)


class GeneratorFactory:
    """Re-iterable with no length and no ``set_epoch``: each pass calls ``make()``."""

    def __init__(self, make: Callable[[], Iterator[object]]) -> None:
        self.make = make
        self.passes = 0

    def __iter__(self) -> Iterator[object]:
        self.passes += 1
        return self.make()


def epoch_batches(length: int) -> Callable[[int], list[tuple[int, int]]]:
    """The batches of ``EpochData(length)`` (and subclasses) for the reference model."""
    return lambda epoch: [(epoch, index) for index in range(length)]


def range_batches(length: int) -> Callable[[int], list[int]]:
    """The batches of ``list(range(length))`` in every epoch, for the reference model."""
    return lambda epoch: list(range(length))
