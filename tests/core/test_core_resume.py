"""Rules 16-17: state_dict / load_state_dict resume a run exactly where it was.

Every test resumes in a new ``Loop`` over new data objects with a new clock that starts
much later (downtime), after a JSON round trip of the state dict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import pytest
from _core_reference import (
    EPOCH_START,
    Durations,
    EpochData,
    FastSkipData,
    GeneratorFactory,
    Record,
    SizedEpochData,
    cycle,
    drive,
    fired_steps,
    steady,
)

from dloop import Event, Loop, LoopEvents
from dloop.testing import ManualClock

DOWNTIME_START = 86_400.0
"""Where the clock of a resumed run starts: a day after the first run's clock."""

EVENTS: dict[Hashable, Event] = {
    "every_4": Event(every_n_steps=4),
    "at_3_9": Event(at_step=[3, 9]),
    "epochs_2": Event(every_n_epochs=2),
    "seconds": Event(every_n_seconds=2.5),
    "times": Event(at_time=[1.0, 7.25, 9.0]),
    ("mixed", 1): Event(every_n_steps=5, at_time=4.0),
}

DURATIONS = cycle([0.5, 1.25, 0.75, 0.25])


def factory(
    make_data: Callable[[], Iterable[Any]], **options: Any
) -> Callable[[ManualClock], Loop[Any]]:
    """Makes a new loop over new data with ``options``, on a given clock."""

    def make(clock: ManualClock) -> Loop[Any]:
        return Loop(make_data(), clock=clock, **options)

    return make


def run_to(
    loop: Loop[Any], clock: ManualClock, durations: Durations, step: int
) -> tuple[list[Record], dict[str, Any]]:
    """Run ``loop`` through the body of ``step``, then take its state dict (through JSON)."""
    records = drive(loop, clock, durations, until_step=step)
    assert records[-1].step == step
    return records, json.loads(json.dumps(loop.state_dict()))


def resumed(
    make_loop: Callable[[ManualClock], Loop[Any]], state: dict[str, Any], durations: Durations
) -> list[Record]:
    """Run a new loop to its end after loading ``state``."""
    clock = ManualClock(start=DOWNTIME_START)
    loop = make_loop(clock)
    loop.load_state_dict(state)
    return drive(loop, clock, durations)


CONFIGURATIONS: dict[str, Callable[[ManualClock], Loop[Any]]] = {
    "sized-set-epoch": factory(lambda: SizedEpochData(5), max_epochs=3, events=EVENTS),
    "unsized-set-epoch": factory(lambda: EpochData(4), max_epochs=3, events=EVENTS),
    "list-max-steps-mid-epoch": factory(lambda: list("abc"), max_steps=10, events=EVENTS),
    "iter-from": factory(lambda: FastSkipData(5), max_epochs=3, events=EVENTS),
    "generator-factory": factory(
        lambda: GeneratorFactory(lambda: iter(range(4))), max_steps=11, events=EVENTS
    ),
    "one-batch-epochs": factory(lambda: SizedEpochData(1), max_epochs=6, events=EVENTS),
    "epoch-length": factory(lambda: range(10), epoch_length=3, max_epochs=4, events=EVENTS),
}


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_resuming_after_any_step_reproduces_the_rest_of_the_uninterrupted_run(name: str) -> None:
    make_loop = CONFIGURATIONS[name]
    clock = ManualClock()
    full = drive(make_loop(clock), clock, DURATIONS)
    assert len(full) > 5
    for step in range(len(full)):
        clock = ManualClock()
        before, state = run_to(make_loop(clock), clock, DURATIONS, step)
        assert before == full[: step + 1]
        assert resumed(make_loop, state, DURATIONS) == full[step + 1 :], f"resumed after {step}"


def test_the_resumed_run_continues_step_epoch_epoch_step_and_elapsed() -> None:
    clock = ManualClock()
    make = factory(lambda: SizedEpochData(4), max_epochs=3)
    _, state = run_to(make(clock), clock, steady(2.0), 5)
    records = resumed(make, state, steady(2.0))
    assert records[0][:5] == (6, 1, 2, 12.0, (1, 2))
    assert records[-1][:4] == (11, 2, 3, 22.0)


def test_a_state_dict_is_built_in_json_values() -> None:
    clock = ManualClock()
    loop = Loop(range(5), max_epochs=2, events=EVENTS, clock=clock)
    drive(loop, clock, DURATIONS, until_step=6)
    live = loop.state_dict()
    assert json.loads(json.dumps(live)) == live

    def builtin(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and builtin(v) for k, v in value.items())
        if isinstance(value, list):
            return all(builtin(item) for item in value)
        return value is None or type(value) in (bool, int, float, str)

    assert builtin(live)


def test_at_step_and_at_time_that_fired_before_the_state_dict_never_fire_again() -> None:
    events = {"step": Event(at_step=2), "time": Event(at_time=3.0)}
    make = factory(lambda: range(10), max_steps=10, events=events)
    clock = ManualClock()
    before, state = run_to(make(clock), clock, steady(1.0), 4)
    assert fired_steps(before, "step") == [2]
    assert fired_steps(before, "time") == [3]
    after = resumed(make, state, steady(1.0))
    assert fired_steps(after, "step") == []
    assert fired_steps(after, "time") == []


def test_at_time_still_to_come_fires_after_resume() -> None:
    events = {"time": Event(at_time=[3.0, 7.5])}
    make = factory(lambda: range(10), max_steps=10, events=events)
    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 4)
    assert fired_steps(resumed(make, state, steady(1.0)), "time") == [8]


def test_every_n_seconds_deadlines_continue_from_the_saved_elapsed() -> None:
    events = {"t": Event(every_n_seconds=10.0)}
    make = factory(lambda: range(30), max_steps=16, events=events)
    clock = ManualClock()
    before, state = run_to(make(clock), clock, steady(3.0), 5)
    assert fired_steps(before, "t") == [4]  # elapsed 12
    # State saved at elapsed 18 (after the body of step 5): the next deadline is 20, at step 7
    # (elapsed 21), then 30 (step 10) and 40 (step 14). Starting over from 0 would fire at
    # once on step 6.
    assert fired_steps(resumed(make, state, steady(3.0)), "t") == [7, 10, 14]


def test_downtime_between_runs_is_not_counted() -> None:
    make = factory(lambda: range(10), max_steps=8)
    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 2)
    assert state["elapsed"] == 3.0
    new_clock = ManualClock(start=5.0)
    loop = make(new_clock)
    loop.load_state_dict(state)
    new_clock.advance(1000.0)  # between load_state_dict and the first next() too
    records = drive(loop, new_clock, steady(1.0))
    assert [record.elapsed for record in records] == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_a_state_dict_taken_inside_the_body_counts_the_body_so_far() -> None:
    clock = ManualClock()
    loop = Loop(range(10), max_steps=8, clock=clock)
    iterator = iter(loop)
    next(iterator)
    clock.advance(0.75)
    assert loop.state_dict()["elapsed"] == 0.75
    assert loop.state_dict()["step"] == 0


def test_set_epoch_is_called_with_the_resumed_epoch_before_positioning() -> None:
    make_data: list[SizedEpochData] = []

    def make(clock: ManualClock) -> Loop[Any]:
        make_data.append(SizedEpochData(5))
        return Loop(make_data[-1], max_epochs=3, clock=clock)

    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 6)  # epoch 1, epoch_step 1
    records = resumed(make, state, steady(1.0))
    data = make_data[-1]
    assert data.log[:3] == [("set_epoch", 1), ("iter", 1), ("set_epoch", 2)]
    # Without iter_from the core skips by loading the 2 batches already done.
    assert data.produced[:2] == [(1, 0), (1, 1)]
    assert [record.batch for record in records[:3]] == [(1, 2), (1, 3), (1, 4)]


def test_iter_from_positions_the_resumed_epoch_without_producing_skipped_batches() -> None:
    made: list[FastSkipData] = []

    def make(clock: ManualClock) -> Loop[Any]:
        made.append(FastSkipData(5))
        return Loop(made[-1], max_epochs=3, clock=clock)

    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 7)  # epoch 1, epoch_step 2
    records = resumed(make, state, steady(1.0))
    data = made[-1]
    assert data.log == [("set_epoch", 1), ("iter_from", 3), ("set_epoch", 2), ("iter", 2)]
    assert (1, 0) not in data.produced
    assert (1, 1) not in data.produced
    assert (1, 2) not in data.produced
    assert [record.batch for record in records[:2]] == [(1, 3), (1, 4)]


def test_a_resume_at_an_epoch_boundary_starts_the_next_epoch_with_epoch_start() -> None:
    made: list[FastSkipData] = []

    def make(clock: ManualClock) -> Loop[Any]:
        made.append(FastSkipData(3))
        return Loop(made[-1], max_epochs=3, clock=clock)

    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 2)  # the last batch of epoch 0
    records = resumed(make, state, steady(1.0))
    assert made[-1].log[:2] == [("set_epoch", 1), ("iter", 1)]
    assert EPOCH_START in records[0].events
    assert records[0][:3] == (3, 1, 0)


def test_a_mid_epoch_resume_emits_no_epoch_start() -> None:
    make = factory(lambda: range(5), max_epochs=2)
    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 1)
    assert fired_steps(resumed(make, state, steady(1.0)), EPOCH_START) == [5]


def test_a_state_dict_of_a_finished_run_resumes_to_nothing() -> None:
    make = factory(lambda: range(3), max_steps=4)
    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 3)
    assert resumed(make, state, steady(1.0)) == []


def test_a_state_dict_taken_before_iterating_resumes_a_fresh_run() -> None:
    make = factory(lambda: range(3), max_epochs=2, events=EVENTS)
    clock = ManualClock()
    fresh = drive(make(clock), clock, DURATIONS)
    state = json.loads(json.dumps(make(ManualClock()).state_dict()))
    clock = ManualClock()
    loop = make(clock)
    loop.load_state_dict(state)
    assert drive(loop, clock, DURATIONS) == fresh


def test_a_resumed_run_can_be_saved_and_resumed_again() -> None:
    make = factory(lambda: SizedEpochData(4), max_epochs=4, events=EVENTS)
    clock = ManualClock()
    full = drive(make(clock), clock, DURATIONS)
    clock = ManualClock()
    records, state = run_to(make(clock), clock, DURATIONS, 2)
    for stop in (6, 7, 11):
        clock = ManualClock(start=DOWNTIME_START)
        loop = make(clock)
        loop.load_state_dict(state)
        more, state = run_to(loop, clock, DURATIONS, stop)
        records += more
    records += resumed(make, state, DURATIONS)
    assert records == full


# ---------------------------------------------------------------- malformed state dicts


def a_state_dict() -> dict[str, Any]:
    clock = ManualClock()
    _, state = run_to(Loop(range(5), max_epochs=3, clock=clock), clock, steady(1.0), 6)
    return state


def test_load_state_dict_names_a_missing_key() -> None:
    state = a_state_dict()
    del state["epoch_step"]
    with pytest.raises(ValueError, match=r"missing.*'epoch_step'"):
        Loop(range(5), max_epochs=3).load_state_dict(state)


def test_load_state_dict_rejects_another_version() -> None:
    state = a_state_dict()
    state["version"] = 99
    with pytest.raises(ValueError, match=r"version 99"):
        Loop(range(5), max_epochs=3).load_state_dict(state)


def test_load_state_dict_rejects_another_format() -> None:
    state = a_state_dict()
    state["format"] = "something.else"
    with pytest.raises(ValueError, match=r"format 'something.else'"):
        Loop(range(5), max_epochs=3).load_state_dict(state)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("step", "6"),
        ("step", 6.0),
        ("step", True),
        ("epoch", None),
        ("epoch_step", [1]),
        ("epoch_finished", 0),
        ("elapsed", "7"),
        ("events", []),
    ],
)
def test_load_state_dict_names_a_key_of_the_wrong_type(key: str, value: object) -> None:
    state = a_state_dict()
    state[key] = value
    with pytest.raises((TypeError, ValueError), match=rf"'{key}'.*{re.escape(repr(value))}"):
        Loop(range(5), max_epochs=3).load_state_dict(state)


def test_load_state_dict_rejects_an_epoch_step_beyond_this_loops_epoch_length() -> None:
    state = a_state_dict()  # epoch 1, epoch_step 1
    state["step"], state["epoch_step"], state["epoch_length"] = 9, 4, None
    with pytest.raises(ValueError, match=r"batch 4 of epoch 1.*3 batches"):
        Loop(range(3), max_epochs=3).load_state_dict(state)


def test_load_state_dict_rejects_an_epoch_length_changed_inside_an_epoch() -> None:
    state = a_state_dict()  # inside epoch 1 of 5-batch epochs
    assert not state["epoch_finished"]
    with pytest.raises(ValueError, match=r"inside epoch 1, whose length was 5.*6 batches"):
        Loop(range(6), max_epochs=3).load_state_dict(state)


def test_a_state_saved_at_an_epoch_end_resumes_with_a_new_epoch_length() -> None:
    loop = Loop(range(5), max_epochs=3)
    for _, events in loop:
        if LoopEvents.EPOCH_END in events:
            state = loop.state_dict()
            break
    resumed = Loop(range(3), max_epochs=3)
    resumed.load_state_dict(state)
    assert [(resumed.state.step, batch) for batch, _ in resumed] == [
        (5, 0),
        (6, 1),
        (7, 2),
        (8, 0),
        (9, 1),
        (10, 2),
    ]


def test_a_resume_inside_an_epoch_beyond_a_lowered_max_epochs_yields_nothing() -> None:
    state = a_state_dict()  # inside epoch 1
    resumed = Loop(range(5), max_epochs=1)
    resumed.load_state_dict(state)
    assert list(resumed) == []
    assert len(resumed) == 0


def test_load_state_dict_rejects_an_inconsistent_position() -> None:
    state = a_state_dict()
    state["epoch_step"] = state["step"] + 1
    with pytest.raises(ValueError, match=r"epoch_step"):
        Loop(range(50), max_epochs=3).load_state_dict(state)


def test_load_state_dict_rejects_a_negative_elapsed() -> None:
    state = a_state_dict()
    state["elapsed"] = -1.0
    with pytest.raises(ValueError, match=r"elapsed.*-1.0"):
        Loop(range(5), max_epochs=3).load_state_dict(state)


def test_load_state_dict_rejects_something_that_is_not_a_mapping() -> None:
    with pytest.raises(TypeError, match=r"mapping.*list"):
        Loop(range(5), max_epochs=3).load_state_dict([1, 2])  # type: ignore[arg-type]


def test_load_state_dict_after_iteration_started_is_a_runtime_error() -> None:
    state = a_state_dict()
    loop = Loop(range(5), max_epochs=3)
    next(iter(loop))
    with pytest.raises(RuntimeError, match=r"before iterating"):
        loop.load_state_dict(state)


def test_a_failed_load_state_dict_leaves_the_loop_as_new() -> None:
    state = a_state_dict()
    state["version"] = 0
    loop = Loop(range(5), max_steps=3)
    with pytest.raises(ValueError, match=r"version"):
        loop.load_state_dict(state)
    assert [batch for batch, _ in loop] == [0, 1, 2]


def test_max_seconds_counts_the_elapsed_time_restored_from_a_state_dict() -> None:
    make = factory(lambda: range(100), max_seconds=12.0)
    clock = ManualClock()
    full = drive(make(clock), clock, steady(1.0))
    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 4)
    records = resumed(make, state, steady(1.0))
    # The budget is shared: the resumed run ends where the uninterrupted one ended.
    assert records == full[5:]


def test_a_state_dict_past_its_time_budget_resumes_to_nothing() -> None:
    make = factory(lambda: range(100), max_seconds=5.0)
    clock = ManualClock()
    _, state = run_to(make(clock), clock, steady(1.0), 3)
    state["elapsed"] = 6.0
    assert resumed(make, state, steady(1.0)) == []
