"""Rule 20: agreement across processes, with threads standing in for processes.

Each thread runs its own ``Loop`` with its own ``ManualClock``, whose times diverge
because every thread spends different durations in its steps; they share one
``dloop.testing.ThreadSync``. Threads are joined with a timeout and the sync has one too,
so a broken agreement fails instead of hanging.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import pytest
from _core_reference import (
    INTERRUPTED,
    TRAINING_END,
    Durations,
    Record,
    SizedEpochData,
    as_tuple,
    cycle,
    drive,
    epoch_batches,
    fired_steps,
    reference_run,
    steady,
)

from dloop import Event, Loop
from dloop.testing import ManualClock, ThreadSync

SYNC_TIMEOUT = 10.0
JOIN_TIMEOUT = 30.0


class RecordingSync:
    """Wraps a sync and records the loop's step and the flags of every ``combine`` call."""

    def __init__(self, inner: ThreadSync) -> None:
        self.inner = inner
        self.every_n_steps = inner.every_n_steps
        self.loop: Loop[Any] | None = None
        self.steps: list[int] = []
        self.flags: list[tuple[int, ...]] = []

    def combine(self, flags: Sequence[int]) -> Sequence[int]:
        assert self.loop is not None
        self.steps.append(self.loop.state.step)
        self.flags.append(tuple(flags))
        return self.inner.combine(flags)


def run_threads(
    make_loop: Callable[[ManualClock, RecordingSync], Loop[Any]],
    durations: Sequence[Durations],
    *,
    every_n_steps: int,
    stop_in_body_of: Sequence[int | None] | None = None,
) -> tuple[list[list[Record]], list[RecordingSync]]:
    """Run one loop per thread, all agreeing through one ThreadSync; return their records."""
    count = len(durations)
    shared = ThreadSync(count, every_n_steps=every_n_steps, timeout=SYNC_TIMEOUT)
    syncs = [RecordingSync(shared) for _ in range(count)]
    results: list[list[Record]] = [[] for _ in range(count)]
    errors: list[BaseException] = []
    stops = stop_in_body_of or [None] * count

    def work(index: int) -> None:
        try:
            clock = ManualClock(start=1000.0 * index)
            loop = make_loop(clock, syncs[index])
            syncs[index].loop = loop
            results[index] = drive(loop, clock, durations[index], stop_in_body_of=stops[index])
        except BaseException as error:  # handed to the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors
    return results, syncs


def combine_steps(agreement_steps: Sequence[int], epoch_first_steps: Sequence[int]) -> list[int]:
    """The ``loop.state.step`` of every ``combine`` call, in order: one on each agreement
    step, and one as each epoch opens (rule 28), after the step before its first batch."""
    calls = [(step, 0) for step in agreement_steps] + [
        (first - 1, 1) for first in epoch_first_steps
    ]
    return [step for step, _ in sorted(calls)]


def elapsed_by_step(durations: Durations, steps: int) -> list[float]:
    """Elapsed time at each step of a run whose bodies take ``durations``."""
    elapsed = [0.0]
    for step in range(steps - 1):
        elapsed.append(elapsed[-1] + durations(step))
    return elapsed


def agreed_time_firings(
    events: dict[Hashable, Event], agreed_elapsed: dict[int, float]
) -> dict[int, set[Hashable]]:
    """Time events by step when they are decided only on agreement steps, from the
    agreed (largest) elapsed time of each."""
    firings: dict[int, set[Hashable]] = {}
    for key, event in events.items():
        k = 1
        pending = set(as_tuple(event.at_time)) if event.at_time is not None else set()
        for step, elapsed in sorted(agreed_elapsed.items()):
            fired = False
            if event.every_n_seconds is not None and elapsed >= k * event.every_n_seconds:
                fired = True
                while k * event.every_n_seconds <= elapsed:
                    k += 1
            due = {time for time in pending if time <= elapsed}
            if due:
                fired = True
                pending -= due
            if fired:
                firings.setdefault(step, set()).add(key)
    return firings


DIVERGING = [cycle([0.25, 0.5]), steady(1.0), cycle([2.0, 0.0, 0.25]), cycle([0.0, 0.75])]

STEP_EVENTS: dict[Hashable, Event] = {
    "every_5": Event(every_n_steps=5),
    "at_4": Event(at_step=4),
    "each_epoch": Event(every_n_epochs=1),
}
TIME_EVENTS: dict[Hashable, Event] = {
    "seconds": Event(every_n_seconds=3.0),
    "times": Event(at_time=[2.0, 10.0]),
    "mixed": Event(every_n_seconds=7.0, at_step=9),
}


@pytest.mark.slow
@pytest.mark.parametrize(("threads", "every_n_steps"), [(2, 1), (2, 3), (3, 4), (4, 2)])
def test_every_process_yields_the_same_events_on_the_same_steps(
    threads: int, every_n_steps: int
) -> None:
    events = {**STEP_EVENTS, **TIME_EVENTS}
    durations = DIVERGING[:threads]
    results, _ = run_threads(
        lambda clock, sync: Loop(
            SizedEpochData(7), max_steps=30, events=events, clock=clock, sync=sync
        ),
        durations,
        every_n_steps=every_n_steps,
    )
    traces = [[(record.step, record.batch, record.events) for record in r] for r in results]
    assert all(trace == traces[0] for trace in traces)
    assert len(traces[0]) == 30
    # The clocks did diverge: the threads saw different elapsed times.
    assert len({r[-1].elapsed for r in results}) == threads


@pytest.mark.slow
@pytest.mark.parametrize(("threads", "every_n_steps"), [(2, 3), (3, 4), (4, 1)])
def test_time_events_fire_only_on_agreement_steps_from_the_largest_elapsed(
    threads: int, every_n_steps: int
) -> None:
    events = {**STEP_EVENTS, **TIME_EVENTS}
    durations = DIVERGING[:threads]
    results, _ = run_threads(
        lambda clock, sync: Loop(
            SizedEpochData(7), max_steps=30, events=events, clock=clock, sync=sync
        ),
        durations,
        every_n_steps=every_n_steps,
    )
    elapsed = [elapsed_by_step(d, 30) for d in durations]
    agreement_steps = [s for s in range(30) if (s + 1) % every_n_steps == 0]
    agreed = {s: max(e[s] for e in elapsed) for s in agreement_steps}
    time_firings = agreed_time_firings(TIME_EVENTS, agreed)
    # Step and epoch events and the built-in ones need no agreement: the reference model
    # without time events gives them.
    steps_only = {**STEP_EVENTS, "mixed": Event(at_step=9)}
    base = reference_run(epoch_batches(7), max_steps=30, events=steps_only)
    expected = [record.events | time_firings.get(record.step, set()) for record in base]
    for r in results:
        assert [record.events for record in r] == expected
    for key in ("seconds", "times"):
        assert set(fired_steps(results[0], key)) <= set(agreement_steps)
        assert fired_steps(results[0], key), f"{key} never fired: the test proves nothing"


@pytest.mark.slow
@pytest.mark.parametrize(("threads", "every_n_steps"), [(2, 4), (3, 1), (4, 3)])
def test_a_stop_requested_on_one_process_stops_all_on_the_same_agreement_step(
    threads: int, every_n_steps: int
) -> None:
    stops: list[int | None] = [None] * threads
    stops[-1] = 5
    results, _ = run_threads(
        lambda clock, sync: Loop(range(10), max_epochs=5, clock=clock, sync=sync),
        DIVERGING[:threads],
        every_n_steps=every_n_steps,
        stop_in_body_of=stops,
    )
    # The first agreement step after the request (in the body of step 5) is the last.
    final = next(s for s in range(6, 50) if (s + 1) % every_n_steps == 0)
    for r in results:
        assert r[-1].step == final
        assert fired_steps(r, TRAINING_END) == [final]
        assert fired_steps(r, INTERRUPTED) == [final]


@pytest.mark.slow
@pytest.mark.parametrize(("threads", "every_n_steps"), [(2, 4), (3, 2), (4, 5)])
def test_max_seconds_with_sync_ends_every_process_on_the_same_agreement_step(
    threads: int, every_n_steps: int
) -> None:
    durations = [steady(0.25 * (index + 1)) for index in range(threads)]
    results, _ = run_threads(
        lambda clock, sync: Loop(range(1000), max_seconds=20.0, clock=clock, sync=sync),
        durations,
        every_n_steps=every_n_steps,
    )
    finals = {r[-1].step for r in results}
    assert len(finals) == 1
    final = finals.pop()
    assert (final + 1) % every_n_steps == 0
    # The slowest process takes 0.25 * threads per step: the final batch is the first
    # agreement step from which the next agreement step would end past the budget.
    slowest = 0.25 * threads
    expected = next(
        s
        for s in range(1000)
        if (s + 1) % every_n_steps == 0 and s * slowest + every_n_steps * slowest >= 20.0
    )
    assert final == expected
    assert all(fired_steps(r, TRAINING_END) == [final] for r in results)


@pytest.mark.slow
def test_combine_is_called_exactly_on_steps_s_with_s_plus_1_divisible_by_every_n_steps() -> None:
    _, syncs = run_threads(
        lambda clock, sync: Loop(
            SizedEpochData(7), max_steps=30, events=TIME_EVENTS, clock=clock, sync=sync
        ),
        DIVERGING[:3],
        every_n_steps=4,
    )
    expected = combine_steps([3, 7, 11, 15, 19, 23, 27], [0, 7, 14, 21, 28])
    for sync in syncs:
        assert sync.steps == expected
        # Flags are a fixed-length sequence of non-negative ints below 2**62.
        assert len({len(flags) for flags in sync.flags}) == 1
        assert all(0 <= flag < 2**62 and type(flag) is int for f in sync.flags for flag in f)


def test_combine_is_called_on_the_same_global_steps_after_a_resume() -> None:
    def make(clock: ManualClock, sync: RecordingSync) -> Loop[Any]:
        loop = Loop(range(7), max_steps=30, events=TIME_EVENTS, clock=clock, sync=sync)
        sync.loop = loop
        return loop

    clock = ManualClock()
    first_sync = RecordingSync(ThreadSync(1, every_n_steps=4, timeout=SYNC_TIMEOUT))
    first = make(clock, first_sync)
    drive(first, clock, steady(1.0), until_step=9)
    state = json.loads(json.dumps(first.state_dict()))
    second_sync = RecordingSync(ThreadSync(1, every_n_steps=4, timeout=SYNC_TIMEOUT))
    clock = ManualClock(start=500.0)
    second = make(clock, second_sync)
    second.load_state_dict(state)
    drive(second, clock, steady(1.0))
    assert first_sync.steps == combine_steps([3, 7], [0, 7])
    # The resumed epoch opens after step 9, where the first run stopped.
    assert second_sync.steps == combine_steps([11, 15, 19, 23, 27], [10, 14, 21, 28])


def test_without_sync_time_events_fire_on_any_step() -> None:
    clock = ManualClock()
    loop = Loop(range(7), max_steps=12, events={"t": Event(every_n_seconds=1.0)}, clock=clock)
    # With a sync of every_n_steps=4 these would wait for steps 3, 7 and 11.
    assert fired_steps(drive(loop, clock, steady(1.0)), "t") == list(range(1, 12))


def test_step_events_with_sync_fire_on_their_own_steps_not_only_agreement_steps() -> None:
    sync = RecordingSync(ThreadSync(1, every_n_steps=4, timeout=SYNC_TIMEOUT))
    loop = Loop(range(5), max_steps=12, events={"odd": Event(every_n_steps=2)}, sync=sync)
    sync.loop = loop
    records = drive(loop, ManualClock())
    assert fired_steps(records, "odd") == [1, 3, 5, 7, 9, 11]
    assert sync.steps == combine_steps([3, 7, 11], [0, 5, 10])


def test_a_stop_request_with_sync_waits_for_the_agreement_step() -> None:
    sync = RecordingSync(ThreadSync(1, every_n_steps=5, timeout=SYNC_TIMEOUT))
    loop = Loop(range(100), max_steps=100, sync=sync)
    sync.loop = loop
    records = drive(loop, ManualClock(), stop_in_body_of=5)
    assert records[-1].step == 9
    assert records[-1].events == frozenset({TRAINING_END, INTERRUPTED})


def test_a_sync_without_a_valid_every_n_steps_or_combine_is_rejected() -> None:
    class NoCombine:
        every_n_steps = 4

    class BadEvery:
        every_n_steps = 0

        def combine(self, flags: Sequence[int]) -> Sequence[int]:
            return flags

    with pytest.raises(TypeError, match=r"combine"):
        Loop(range(3), max_steps=3, sync=NoCombine())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"every_n_steps.*0"):
        Loop(range(3), max_steps=3, sync=BadEvery())
