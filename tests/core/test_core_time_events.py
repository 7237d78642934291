"""Rules 5-8: elapsed time, every_n_seconds, at_time and condition_function.

Time comes from a ``ManualClock`` moved inside the loop body (the time a training step
takes), or by ``tick=``; nothing sleeps.
"""

from __future__ import annotations

from _core_reference import Record, cycle, drive, fired_steps, steady

from dloop import Event, Loop, LoopState
from dloop.testing import ManualClock


class CountingClock:
    """A ``ManualClock`` that counts how often it is read."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.clock()


def test_elapsed_counts_from_the_first_next_not_from_construction() -> None:
    clock = ManualClock(start=50.0)
    loop = Loop(range(3), max_steps=3, clock=clock)
    clock.advance(1000.0)  # time between construction and iteration is not counted
    iterator = iter(loop)
    clock.advance(7.0)  # nor is time between iter() and the first next()
    next(iterator)
    assert loop.state.elapsed == 0.0


def test_elapsed_is_read_just_before_each_batch_is_yielded() -> None:
    clock = ManualClock()
    loop = Loop(range(5), max_steps=5, clock=clock)
    records = drive(loop, clock, cycle([1.0, 2.5, 0.25]))
    assert [record.elapsed for record in records] == [0.0, 1.0, 3.5, 3.75, 4.75]


def test_elapsed_with_a_ticking_clock_includes_the_time_to_fetch_each_batch() -> None:
    loop = Loop(range(4), max_steps=4, clock=ManualClock(tick=0.5))
    # Readings: 0 at the first next(), then 0.5, 1.0, ... just before each batch.
    assert [loop.state.elapsed for _ in loop] == [0.5, 1.0, 1.5, 2.0]


def test_the_clock_is_read_once_per_step_plus_once_at_the_start() -> None:
    clock = CountingClock()
    events = {
        "steps": Event(every_n_steps=2),
        "seconds": Event(every_n_seconds=1.0),
        "times": Event(at_time=[0.5, 3.0]),
    }
    loop = Loop(range(4), max_epochs=3, clock=clock, events=events)
    steps = 0
    for _ in loop:
        steps += 1
        clock.clock.advance(0.75)
    assert steps == 12
    assert clock.reads == steps + 1


def test_every_n_seconds_fires_on_the_first_step_whose_elapsed_reaches_each_multiple() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_steps=16, clock=clock, events={"t": Event(every_n_seconds=10)})
    records = drive(loop, clock, steady(3.0))
    # Elapsed 0, 3, ..., 45: first >= 10 is 12 (step 4), >= 20 is 21 (step 7),
    # >= 30 is 30 (step 10), >= 40 is 42 (step 14).
    assert fired_steps(records, "t") == [4, 7, 10, 14]


def test_every_n_seconds_deadlines_are_multiples_of_t_so_late_firings_do_not_drift() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_steps=12, clock=clock, events={"t": Event(every_n_seconds=4)})
    records = drive(loop, clock, steady(2.5))
    # Elapsed 0, 2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20, 22.5, 25, 27.5. Deadlines 4, 8, 12, ...
    # fire at 5, 10, 12.5, 17.5, 20, 25; a deadline of "last firing + 4" would give 5, 10, 15,
    # 20, 25.
    assert fired_steps(records, "t") == [2, 4, 5, 7, 8, 10]


def test_every_n_seconds_deadlines_missed_in_one_long_step_collapse_into_one_firing() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_steps=12, clock=clock, events={"t": Event(every_n_seconds=10)})
    # Step 1 takes 35 s: deadlines 10, 20 and 30 pass during it.
    records = drive(loop, clock, lambda step: 35.0 if step == 1 else 1.0)
    elapsed = {record.step: record.elapsed for record in records}
    assert elapsed[2] == 36.0
    # One firing on step 2 for 10, 20 and 30, the next at 40 (step 6), none in between.
    assert fired_steps(records, "t") == [2, 6]


def test_every_n_seconds_fires_at_most_once_per_step() -> None:
    clock = ManualClock()
    loop = Loop(range(10), max_steps=4, clock=clock, events={"t": Event(every_n_seconds=0.25)})
    records = drive(loop, clock, steady(1.0))
    assert fired_steps(records, "t") == [1, 2, 3]


def test_every_n_seconds_does_not_fire_at_elapsed_zero() -> None:
    clock = ManualClock()
    loop = Loop(range(10), max_steps=3, clock=clock, events={"t": Event(every_n_seconds=1.0)})
    assert fired_steps(drive(loop, clock, steady(0.0)), "t") == []


def test_at_time_fires_once_on_the_first_step_whose_elapsed_reaches_it() -> None:
    clock = ManualClock()
    loop = Loop(range(10), max_steps=10, clock=clock, events={"t": Event(at_time=5.0)})
    records = drive(loop, clock, steady(2.0))
    assert fired_steps(records, "t") == [3]  # elapsed 6: the first >= 5


def test_at_time_fires_on_a_step_whose_elapsed_equals_it() -> None:
    clock = ManualClock()
    loop = Loop(range(10), max_steps=10, clock=clock, events={"t": Event(at_time=4.0)})
    assert fired_steps(drive(loop, clock, steady(2.0)), "t") == [2]


def test_at_time_zero_fires_on_step_zero() -> None:
    clock = ManualClock()
    loop = Loop(range(10), max_steps=3, clock=clock, events={"start": Event(at_time=0.0)})
    assert fired_steps(drive(loop, clock, steady(1.0)), "start") == [0]


def test_at_time_collection_fires_once_per_time_and_once_per_step() -> None:
    clock = ManualClock()
    event = Event(at_time=[7.0, 1.5, 2.0, 30.0])
    loop = Loop(range(10), max_steps=10, clock=clock, events={"t": event})
    records = drive(loop, clock, steady(3.0))
    # Elapsed 0, 3, 6, 9, ...: 1.5 and 2.0 both fall due on step 1 (one firing), 7 on step 3,
    # 30 on step 10 which the run never reaches.
    assert fired_steps(records, "t") == [1, 3]


def test_condition_function_is_called_once_per_step_with_the_up_to_date_state() -> None:
    clock = ManualClock()
    seen: list[LoopState] = []

    def condition(state: LoopState) -> bool:
        seen.append(state)
        return state.elapsed >= 2.0 and state.epoch_step == 0

    loop = Loop(
        range(3), max_epochs=3, clock=clock, events={"c": Event(condition_function=condition)}
    )
    records = drive(loop, clock, steady(0.5))
    assert [(s.step, s.epoch, s.epoch_step, s.elapsed) for s in seen] == [
        (r.step, r.epoch, r.epoch_step, r.elapsed) for r in records
    ]
    assert fired_steps(records, "c") == [6]  # epoch_step 0 at elapsed 0, 1.5, 3.0


def test_condition_function_fires_on_exactly_the_steps_it_returns_true() -> None:
    loop = Loop(
        range(7),
        max_steps=20,
        events={"odd": Event(condition_function=lambda state: state.step % 2 == 1)},
    )
    assert fired_steps(drive(loop, ManualClock()), "odd") == list(range(1, 20, 2))


def test_time_triggers_and_step_triggers_combine_in_one_event() -> None:
    clock = ManualClock()
    event = Event(every_n_steps=4, every_n_seconds=5.0, at_time=1.0)
    loop = Loop(range(20), max_steps=12, clock=clock, events={"mix": event})
    records: list[Record] = drive(loop, clock, steady(2.0))
    # every_n_steps: 3, 7, 11; every_n_seconds: elapsed 6 (step 3), 10 (step 5), 16 (step 8),
    # 20 (step 10); at_time 1: elapsed 2 (step 1).
    assert fired_steps(records, "mix") == [1, 3, 5, 7, 8, 10, 11]
