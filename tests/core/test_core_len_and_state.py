"""Rules 14-15: len(loop) and the fields of LoopState."""

from __future__ import annotations

import itertools
import json

import pytest
from _core_reference import EpochData, GeneratorFactory, SizedEpochData, drive, steady

from dloop import Loop, LoopState, LoopWarning
from dloop.testing import ManualClock


def test_len_is_max_steps() -> None:
    assert len(Loop(range(10), max_steps=7)) == 7


def test_len_is_max_epochs_times_the_epoch_length() -> None:
    assert len(Loop(range(10), max_epochs=3)) == 30


def test_len_uses_epoch_length_when_given() -> None:
    assert len(Loop(itertools.count(), max_epochs=3, epoch_length=4)) == 12


def test_len_is_the_smaller_of_max_steps_and_max_epochs_times_the_length() -> None:
    assert len(Loop(range(10), max_epochs=3, max_steps=25)) == 25
    assert len(Loop(range(10), max_epochs=2, max_steps=25)) == 20


def test_len_of_a_one_shot_stream_with_max_steps_is_max_steps() -> None:
    assert len(Loop(itertools.count(), max_steps=9)) == 9


def test_len_equals_the_number_of_batches_yielded() -> None:
    for loop in [
        Loop(range(4), max_epochs=3),
        Loop(range(4), max_steps=6),
        Loop(range(4), max_epochs=2, max_steps=100),
    ]:
        expected = len(loop)
        assert sum(1 for _ in loop) == expected


@pytest.mark.parametrize(
    "make",
    [
        lambda: Loop(GeneratorFactory(lambda: iter(range(3))), max_epochs=2),
        lambda: Loop(EpochData(3), max_epochs=2),
        lambda: Loop(range(3), max_seconds=10.0),
    ],
    ids=["no-len-max-epochs", "set-epoch-no-len", "max-seconds-only"],
)
def test_len_is_a_type_error_when_unknown(make: object) -> None:
    loop = make()  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"len"):
        len(loop)


def test_len_after_resume_is_the_number_of_batches_still_to_come() -> None:
    clock = ManualClock()
    first = Loop(range(5), max_epochs=3, clock=clock)
    drive(first, clock, until_step=6)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = Loop(range(5), max_epochs=3, clock=ManualClock())
    resumed.load_state_dict(state)
    assert len(resumed) == 15 - 7
    assert sum(1 for _ in resumed) == 8


def test_state_has_every_field_of_the_batch_just_yielded() -> None:
    clock = ManualClock()
    loop = Loop(SizedEpochData(4), max_epochs=2, clock=clock)
    states: list[LoopState] = []
    for _ in loop:
        states.append(loop.state)
        clock.advance(0.5)
    assert [(s.step, s.epoch, s.epoch_step, s.elapsed) for s in states] == [
        (step, step // 4, step % 4, step * 0.5) for step in range(8)
    ]
    assert {(s.epoch_length, s.total_steps) for s in states} == {(4, 8)}


def test_state_epoch_length_and_total_steps_are_none_until_known() -> None:
    """Unknown before the last batch; on it the run has reached its total (rule 25)."""
    loop = Loop(EpochData(3), max_epochs=2)
    states = [loop.state for _ in loop]
    assert {(s.epoch_length, s.total_steps, s.progress) for s in states[:-1]} == {
        (None, None, None)
    }
    assert (states[-1].epoch_length, states[-1].total_steps, states[-1].progress) == (None, 6, 1.0)


def test_a_stream_that_ends_early_reaches_its_total_on_its_last_batch() -> None:
    """total_steps, progress and len(loop) say what the run did once its data ran out."""
    loop = Loop(iter(range(3)), max_steps=10)
    with pytest.warns(LoopWarning, match="ended at step 2"):
        states = [loop.state for _ in loop]
    assert [s.total_steps for s in states] == [10, 10, 3]
    assert states[-1].progress == 1.0
    assert states[-1].eta == 0.0
    assert len(loop) == 3


def test_state_total_steps_from_max_steps() -> None:
    loop = Loop(EpochData(3), max_steps=5)
    assert {loop.state.total_steps for _ in loop} == {5}


def test_progress_is_the_step_fraction_with_a_known_total() -> None:
    loop = Loop(range(10), max_steps=8)
    assert [loop.state.progress for _ in loop] == [(step + 1) / 8 for step in range(8)]


def test_progress_is_the_time_fraction_with_max_seconds_only() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_seconds=20.0, clock=clock)
    progress = []
    for _ in loop:
        progress.append((loop.state.elapsed, loop.state.progress))
        clock.advance(2.0)
    assert all(value == elapsed / 20.0 for elapsed, value in progress[:-1])
    assert progress[-1][1] == 1.0  # the run has ended: it reached its total


def test_progress_is_the_larger_of_the_step_and_time_fractions() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_steps=10, max_seconds=40.0, clock=clock)
    for _ in loop:
        state = loop.state
        assert state.progress == max((state.step + 1) / 10, state.elapsed / 40.0)
        clock.advance(1.0 if state.step < 5 else 8.0)


def test_progress_stays_within_0_and_1() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_seconds=3.0, max_steps=50, clock=clock)
    for _ in loop:
        progress = loop.state.progress
        assert progress is not None
        assert 0.0 <= progress <= 1.0
        clock.advance(5.0)  # far past the budget


def test_eta_is_none_until_a_step_has_been_timed() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_steps=10, clock=clock)
    etas = []
    for _ in loop:
        etas.append(loop.state.eta)
        clock.advance(2.0)
    assert etas[0] is None
    assert all(eta is not None for eta in etas[1:])


def test_eta_estimates_the_seconds_left_within_one_step() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_steps=10, clock=clock)
    for _ in loop:
        state = loop.state
        if state.step >= 1:
            assert state.eta is not None
            # The body of this step and the 10 - 1 - step steps after it remain, 2 s each.
            remaining = 2.0 * (10 - state.step)
            assert remaining - 2.0 <= state.eta <= remaining
        clock.advance(2.0)


def test_eta_with_max_seconds_is_the_time_left_in_the_budget() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_seconds=30.0, clock=clock)
    for _ in loop:
        state = loop.state
        assert state.eta is not None
        assert 0.0 <= state.eta <= 30.0 - state.elapsed
        clock.advance(3.0)


def test_eta_is_none_with_no_way_to_estimate_it() -> None:
    clock = ManualClock()
    loop = Loop(EpochData(3), max_epochs=2, clock=clock)
    etas = []
    for _ in loop:
        etas.append(loop.state.eta)
        clock.advance(1.0)
    assert etas[:-1] == [None] * 5  # (on the final batch the run is known to end now)


def test_state_before_iterating_says_no_step_is_done() -> None:
    loop = Loop(range(3), max_steps=3, clock=ManualClock())
    assert loop.state.step == -1
    assert loop.state.elapsed == 0.0


def test_state_is_a_frozen_snapshot() -> None:
    loop = Loop(range(3), max_steps=3, clock=ManualClock())
    iterator = iter(loop)
    next(iterator)
    snapshot = loop.state
    next(iterator)
    assert snapshot.step == 0
    assert loop.state.step == 1
    with pytest.raises(AttributeError):
        snapshot.step = 5  # type: ignore[misc]


def test_elapsed_in_state_follows_steady_steps() -> None:
    clock = ManualClock()
    records = drive(Loop(range(6), max_steps=6, clock=clock), clock, steady(1.5))
    assert [record.elapsed for record in records] == [1.5 * step for step in range(6)]
