"""Rules 1-4 and 9: counting, and events driven by steps and epochs."""

from __future__ import annotations

from _core_reference import (
    EPOCH_END,
    TRAINING_END,
    GeneratorFactory,
    SizedEpochData,
    drive,
    fired_steps,
)

from dloop import Event, Loop
from dloop.testing import ManualClock


def test_step_epoch_and_epoch_step_are_zero_based_and_step_is_global() -> None:
    loop = Loop(SizedEpochData(3), max_epochs=3)
    positions = [(loop.state.step, loop.state.epoch, loop.state.epoch_step) for _ in loop]
    assert positions == [
        (0, 0, 0),
        (1, 0, 1),
        (2, 0, 2),
        (3, 1, 0),
        (4, 1, 1),
        (5, 1, 2),
        (6, 2, 0),
        (7, 2, 1),
        (8, 2, 2),
    ]


def test_counting_is_the_same_for_data_without_a_length() -> None:
    loop = Loop(GeneratorFactory(lambda: iter("ab")), max_epochs=2)
    positions = [(loop.state.step, loop.state.epoch, loop.state.epoch_step) for _ in loop]
    assert positions == [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]


def test_every_n_steps_fires_on_steps_15_31_47() -> None:
    loop = Loop(range(10), max_steps=50, events={"log": Event(every_n_steps=16)})
    assert fired_steps(drive(loop, ManualClock()), "log") == [15, 31, 47]


def test_every_n_steps_counts_globally_across_epochs_not_per_epoch() -> None:
    # Epochs of 5 batches: per-epoch counting would fire on steps 2, 7, 12.
    loop = Loop(range(5), max_epochs=3, events={"eval": Event(every_n_steps=3)})
    assert fired_steps(drive(loop, ManualClock()), "eval") == [2, 5, 8, 11, 14]


def test_every_n_steps_1_fires_on_every_step() -> None:
    loop = Loop(range(4), max_steps=6, events={"tick": Event(every_n_steps=1)})
    assert fired_steps(drive(loop, ManualClock()), "tick") == [0, 1, 2, 3, 4, 5]


def test_at_step_fires_on_that_step_once() -> None:
    loop = Loop(range(3), max_epochs=4, events={"once": Event(at_step=7)})
    assert fired_steps(drive(loop, ManualClock()), "once") == [7]


def test_at_step_accepts_a_collection_and_fires_once_on_each() -> None:
    loop = Loop(range(3), max_steps=20, events={"some": Event(at_step=[11, 0, 4, 4])})
    assert fired_steps(drive(loop, ManualClock()), "some") == [0, 4, 11]


def test_at_step_past_the_end_never_fires() -> None:
    loop = Loop(range(3), max_steps=5, events={"late": Event(at_step=5)})
    assert fired_steps(drive(loop, ManualClock()), "late") == []


def test_every_n_epochs_fires_on_the_last_batch_of_epochs_e_with_e_plus_1_divisible_by_n() -> None:
    loop = Loop(range(4), max_epochs=6, events={"save": Event(every_n_epochs=2)})
    records = drive(loop, ManualClock())
    # Epochs 1, 3 and 5 end on steps 7, 15 and 23.
    assert fired_steps(records, "save") == [7, 15, 23]
    assert all(EPOCH_END in record.events for record in records if "save" in record.events)


def test_every_n_epochs_fires_on_the_epoch_end_found_by_looking_ahead() -> None:
    data = GeneratorFactory(lambda: iter(range(3)))
    loop = Loop(data, max_epochs=3, events={"each": Event(every_n_epochs=1)})
    assert fired_steps(drive(loop, ManualClock()), "each") == [2, 5, 8]


def test_every_n_epochs_does_not_fire_on_an_epoch_cut_short() -> None:
    loop = Loop(range(4), max_steps=7, events={"each": Event(every_n_epochs=1)})
    assert fired_steps(drive(loop, ManualClock()), "each") == [3]


def test_an_event_with_several_triggers_fires_when_any_fires() -> None:
    event = Event(every_n_steps=5, at_step=[2, 9], every_n_epochs=3)
    loop = Loop(range(4), max_epochs=3, events={"any": event})
    # every_n_steps: 4, 9; at_step: 2, 9; every_n_epochs=3: last batch of epoch 2 (step 11).
    assert fired_steps(drive(loop, ManualClock()), "any") == [2, 4, 9, 11]


def test_an_event_whose_triggers_coincide_appears_once_with_the_others_unchanged() -> None:
    events = {
        "both": Event(every_n_steps=2, at_step=3),
        "other": Event(at_step=3),
    }
    loop = Loop(range(8), max_steps=4, events=events)
    records = drive(loop, ManualClock())
    assert records[3].events == frozenset({"both", "other", TRAINING_END})
    assert fired_steps(records, "both") == [1, 3]


def test_event_keys_can_be_any_hashable_not_just_strings() -> None:
    key = ("checkpoint", 2)
    loop = Loop(range(4), max_steps=4, events={key: Event(every_n_steps=2), 7: Event(at_step=0)})
    records = drive(loop, ManualClock())
    assert fired_steps(records, key) == [1, 3]
    assert fired_steps(records, 7) == [0]
