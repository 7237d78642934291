"""Rules 10-11: the built-in events, and how max_epochs, max_steps and max_seconds end a run."""

from __future__ import annotations

import itertools

import pytest
from _core_reference import (
    EPOCH_END,
    EPOCH_START,
    INTERRUPTED,
    TRAINING_END,
    GeneratorFactory,
    Record,
    drive,
    fired_steps,
    steady,
)

from dloop import Event, Loop, LoopEvents
from dloop.testing import ManualClock


def final_steps(records: list[Record]) -> list[int]:
    return fired_steps(records, TRAINING_END)


def test_epoch_start_fires_on_the_first_batch_of_every_epoch() -> None:
    records = drive(Loop(range(3), max_epochs=3), ManualClock())
    assert fired_steps(records, EPOCH_START) == [0, 3, 6]


def test_epoch_end_fires_on_the_last_batch_of_every_epoch_from_len_data() -> None:
    records = drive(Loop(range(3), max_epochs=3), ManualClock())
    assert fired_steps(records, EPOCH_END) == [2, 5, 8]


def test_epoch_end_uses_epoch_length_when_given() -> None:
    loop = Loop(range(10), max_epochs=3, epoch_length=4)
    records = drive(loop, ManualClock())
    assert fired_steps(records, EPOCH_END) == [3, 7, 11]
    assert [record.batch for record in records] == [0, 1, 2, 3] * 3


def test_epoch_length_cuts_an_endless_stream_into_epochs() -> None:
    loop = Loop(itertools.count(), max_epochs=3, epoch_length=4)
    records = drive(loop, ManualClock())
    assert [record.batch for record in records] == list(range(12))
    assert fired_steps(records, EPOCH_START) == [0, 4, 8]
    assert fired_steps(records, EPOCH_END) == [3, 7, 11]


def test_epoch_end_is_found_by_looking_one_batch_ahead_without_a_length() -> None:
    passes = iter([3, 1, 2])
    data = GeneratorFactory(lambda: iter(range(next(passes))))
    records = drive(Loop(data, max_epochs=3), ManualClock())
    assert [record.batch for record in records] == [0, 1, 2, 0, 0, 1]
    assert fired_steps(records, EPOCH_START) == [0, 3, 4]
    assert fired_steps(records, EPOCH_END) == [2, 3, 5]


def test_training_end_fires_exactly_once_on_the_last_batch_when_max_epochs_ends_the_run() -> None:
    records = drive(Loop(range(4), max_epochs=2), ManualClock())
    assert len(records) == 8
    assert final_steps(records) == [7]
    assert records[-1].events == frozenset({EPOCH_END, TRAINING_END})


def test_training_end_fires_exactly_once_when_max_steps_ends_the_run_mid_epoch() -> None:
    records = drive(Loop(range(4), max_steps=6), ManualClock())
    assert len(records) == 6
    assert final_steps(records) == [5]
    assert records[-1].events == frozenset({TRAINING_END})  # cut short: no EPOCH_END


def test_training_end_fires_exactly_once_when_max_seconds_ends_the_run() -> None:
    clock = ManualClock()
    records = drive(Loop(range(100), max_seconds=5.0, clock=clock), clock, steady(1.0))
    assert final_steps(records) == [records[-1].step]
    assert EPOCH_END not in records[-1].events


def test_training_end_fires_exactly_once_when_a_stop_request_ends_the_run() -> None:
    records = drive(Loop(range(100), max_steps=50), ManualClock(), stop_in_body_of=4)
    assert final_steps(records) == [5]
    assert fired_steps(records, INTERRUPTED) == [5]


def test_interrupted_never_fires_when_a_limit_ends_the_run() -> None:
    clock = ManualClock()
    loops = [
        Loop(range(3), max_epochs=2),
        Loop(range(3), max_steps=4),
        Loop(range(100), max_seconds=3.0, clock=clock),
    ]
    for loop in loops:
        records = drive(loop, clock, steady(1.0))
        assert fired_steps(records, INTERRUPTED) == []
        assert len(final_steps(records)) == 1


def test_a_one_batch_run_has_every_built_in_event_on_its_only_batch() -> None:
    clock = ManualClock()
    records = drive(Loop(["only"], max_epochs=1, clock=clock), clock)
    assert records == [
        Record(0, 0, 0, 0.0, "only", frozenset({EPOCH_START, EPOCH_END, TRAINING_END}))
    ]


def test_built_in_events_are_not_strings_so_no_user_key_equals_them() -> None:
    built_in: object = LoopEvents.TRAINING_END
    assert not isinstance(built_in, str)
    records = drive(Loop(range(2), max_steps=2), ManualClock())
    assert "TRAINING_END" not in records[-1].events


def test_max_epochs_ends_after_that_many_full_epochs() -> None:
    records = drive(Loop(range(5), max_epochs=3), ManualClock())
    assert len(records) == 15
    assert records[-1][:3] == (14, 2, 4)


def test_max_steps_ends_after_that_many_steps() -> None:
    records = drive(Loop(range(5), max_steps=12), ManualClock())
    assert [record.step for record in records] == list(range(12))


def test_the_first_limit_reached_ends_the_run_steps_before_epochs() -> None:
    records = drive(Loop(range(5), max_epochs=3, max_steps=7), ManualClock())
    assert records[-1].step == 6


def test_the_first_limit_reached_ends_the_run_epochs_before_steps() -> None:
    records = drive(Loop(range(5), max_epochs=2, max_steps=70), ManualClock())
    assert records[-1].step == 9


def test_the_first_limit_reached_ends_the_run_seconds_before_steps_and_epochs() -> None:
    clock = ManualClock()
    loop = Loop(range(5), max_epochs=20, max_steps=70, max_seconds=7.5, clock=clock)
    records = drive(loop, clock, steady(1.0))
    # Steady 1 s steps: the final batch is the first whose elapsed + 1 >= 7.5 (elapsed 7).
    assert records[-1].step == 7


def test_the_first_limit_reached_ends_the_run_steps_before_seconds() -> None:
    clock = ManualClock()
    loop = Loop(range(5), max_steps=4, max_seconds=100.0, clock=clock)
    assert drive(loop, clock, steady(1.0))[-1].step == 3


def test_an_endless_stream_with_max_steps_ends() -> None:
    records = drive(Loop(itertools.count(), max_steps=5), ManualClock())
    assert [record.batch for record in records] == [0, 1, 2, 3, 4]
    assert final_steps(records) == [4]


@pytest.mark.parametrize(
    ("step_seconds", "max_seconds"),
    [(1.0, 10.0), (1.0, 10.5), (0.5, 10.0), (2.0, 9.0), (3.0, 100.0), (0.25, 2.0)],
)
def test_max_seconds_final_batch_is_the_first_where_elapsed_plus_one_step_reaches_it(
    step_seconds: float, max_seconds: float
) -> None:
    clock = ManualClock()
    loop = Loop(range(1000), max_seconds=max_seconds, clock=clock)
    records = drive(loop, clock, steady(step_seconds))
    expected = next(s for s in itertools.count() if s * step_seconds + step_seconds >= max_seconds)
    assert [record.step for record in records] == list(range(expected + 1))
    # So the run ends within one step past its budget, never earlier than one step before.
    end = records[-1].elapsed + step_seconds
    assert max_seconds <= end < max_seconds + step_seconds


def test_max_seconds_cannot_predict_on_the_first_step_before_any_step_was_measured() -> None:
    # A budget of exactly one step: step 0 has no measured duration, so the loop stops on
    # step 1, one step past the budget at most.
    clock = ManualClock()
    records = drive(Loop(range(1000), max_seconds=1.0, clock=clock), clock, steady(1.0))
    assert [record.step for record in records] == [0, 1]
    assert LoopEvents.TRAINING_END in records[-1].events


@pytest.mark.parametrize(("tick", "max_seconds"), [(1.0, 10.0), (0.5, 10.25), (2.0, 9.0)])
def test_max_seconds_with_a_ticking_clock_stops_at_the_first_batch_within_one_step_of_it(
    tick: float, max_seconds: float
) -> None:
    loop = Loop(range(1000), max_seconds=max_seconds, clock=ManualClock(tick=tick))
    elapsed = [loop.state.elapsed for _ in loop]
    # Each step takes one tick: the final batch is the first with elapsed + tick >= budget.
    assert elapsed[-1] + tick >= max_seconds
    assert all(value + tick < max_seconds for value in elapsed[:-1])


def test_max_seconds_uses_the_expected_step_duration_measured_from_recent_steps() -> None:
    clock = ManualClock()
    # Steps alternate 0.75 s and 1.25 s, so elapsed runs 0, 0.75, 2, 2.75, ..., 48, 48.75, 50.
    # Any expected duration from 0.75 to 1.25 makes 48.75 the first elapsed that reaches
    # 49.5 with one more step; 48 would need 1.5.
    loop = Loop(range(1000), max_seconds=49.5, clock=clock)
    records = drive(loop, clock, lambda step: 0.75 if step % 2 == 0 else 1.25)
    assert records[-1].elapsed == 48.75
    assert records[-1].elapsed + 1.25 < 49.5 + 1.25  # at most one step past the budget


def test_max_seconds_ends_the_run_even_when_other_events_are_checked_every_step() -> None:
    clock = ManualClock()
    loop = Loop(
        range(1000),
        max_seconds=10.0,
        clock=clock,
        events={"each": Event(every_n_steps=1), "t": Event(every_n_seconds=2.0)},
    )
    records = drive(loop, clock, steady(1.0))
    assert records[-1].step == 9
