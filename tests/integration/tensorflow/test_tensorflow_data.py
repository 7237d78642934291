"""A ``tf.data.Dataset`` drives ``dloop.Loop`` as it is, whatever its cardinality.

``len(dataset)`` is the cardinality when it is finite and known; for an unknown
cardinality (after ``filter``) or an infinite one (after ``repeat()``) TensorFlow raises
``TypeError``, which the loop reads as "no length": it then finds the end of each epoch by
looking one batch ahead, or is ended by ``max_steps``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import pytest
import tensorflow as tf

from dloop import Event, Loop, LoopEvents

Trace = list[tuple[int, int, list[int], frozenset[Hashable]]]


def run(loop: Loop[tf.Tensor]) -> Trace:
    """(step, epoch, batch values, events) for every batch the loop yields."""
    return [
        (loop.state.step, loop.state.epoch, batch.numpy().tolist(), events)
        for batch, events in loop
    ]


def steps_with(trace: Trace, key: Hashable) -> list[int]:
    return [step for step, _, _, events in trace if key in events]


def known_dataset() -> tf.data.Dataset:
    """0..9 in batches of 3: four batches, the last one short."""
    return tf.data.Dataset.range(10).batch(3)


def unknown_dataset() -> tf.data.Dataset:
    """The even numbers of 0..9 in batches of 2: three batches TensorFlow cannot count."""
    return tf.data.Dataset.range(10).filter(lambda x: x % 2 == 0).batch(2)


def infinite_dataset() -> tf.data.Dataset:
    """0, 1, 2, 0, 1, 2, ... in batches of 2, endlessly."""
    return tf.data.Dataset.range(3).repeat().batch(2)


def test_len_of_a_dataset_is_its_cardinality_or_a_type_error() -> None:
    assert known_dataset().cardinality().numpy() == 4
    assert len(known_dataset()) == 4
    assert unknown_dataset().cardinality().numpy() == tf.data.UNKNOWN_CARDINALITY
    with pytest.raises(TypeError, match="unknown"):
        len(unknown_dataset())
    assert infinite_dataset().cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    with pytest.raises(TypeError, match="infinite"):
        len(infinite_dataset())


def test_known_cardinality_gives_the_epoch_length_and_the_run_length() -> None:
    loop = Loop(known_dataset(), max_epochs=3)

    assert len(loop) == 12
    trace = run(loop)

    assert loop.state.epoch_length == 4
    assert [step for step, *_ in trace] == list(range(12))
    assert [epoch for _, epoch, _, _ in trace] == [0] * 4 + [1] * 4 + [2] * 4
    assert steps_with(trace, LoopEvents.EPOCH_START) == [0, 4, 8]
    assert steps_with(trace, LoopEvents.EPOCH_END) == [3, 7, 11]
    assert steps_with(trace, LoopEvents.TRAINING_END) == [11]


def test_the_dataset_is_iterated_again_for_each_epoch() -> None:
    trace = run(Loop(known_dataset(), max_epochs=3))

    one_epoch = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [batch for _, _, batch, _ in trace] == one_epoch * 3


def test_a_reshuffling_dataset_is_reshuffled_for_each_epoch() -> None:
    dataset = tf.data.Dataset.range(16).shuffle(16, seed=1, reshuffle_each_iteration=True)
    trace = run(Loop(dataset.batch(16), max_epochs=3))

    orders = [batch for _, _, batch, _ in trace]
    assert [sorted(order) for order in orders] == [list(range(16))] * 3
    assert len({tuple(order) for order in orders}) == 3


def test_unknown_cardinality_finds_each_epoch_end_by_looking_ahead() -> None:
    loop = Loop(unknown_dataset(), max_epochs=3)

    with pytest.raises(TypeError):
        len(loop)
    trace = run(loop)

    assert loop.state.epoch_length is None
    assert [batch for _, _, batch, _ in trace] == [[0, 2], [4, 6], [8]] * 3
    assert steps_with(trace, LoopEvents.EPOCH_START) == [0, 3, 6]
    assert steps_with(trace, LoopEvents.EPOCH_END) == [2, 5, 8]
    assert steps_with(trace, LoopEvents.TRAINING_END) == [8]


def test_unknown_cardinality_with_max_steps_ends_inside_an_epoch() -> None:
    loop = Loop(unknown_dataset(), max_epochs=3, max_steps=5)

    assert len(loop) == 5
    trace = run(loop)

    assert steps_with(trace, LoopEvents.EPOCH_END) == [2]
    assert steps_with(trace, LoopEvents.TRAINING_END) == [4]


def test_infinite_cardinality_runs_until_max_steps_in_one_epoch() -> None:
    loop = Loop(infinite_dataset(), max_steps=7, events={"Update": Event(every_n_steps=3)})

    assert len(loop) == 7
    trace = run(loop)

    assert loop.state.epoch_length is None
    assert [batch for _, _, batch, _ in trace] == [[0, 1], [2, 0], [1, 2]] * 2 + [[0, 1]]
    assert {epoch for _, epoch, _, _ in trace} == {0}
    assert steps_with(trace, LoopEvents.EPOCH_END) == []
    assert steps_with(trace, "Update") == [2, 5]
    assert steps_with(trace, LoopEvents.TRAINING_END) == [6]


def test_infinite_cardinality_cut_into_epochs_by_epoch_length() -> None:
    loop = Loop(infinite_dataset(), max_epochs=2, epoch_length=4)

    assert len(loop) == 8
    trace = run(loop)

    # Each epoch iterates the dataset again, so each starts from its first batch.
    assert [batch for _, _, batch, _ in trace] == [[0, 1], [2, 0], [1, 2], [0, 1]] * 2
    assert steps_with(trace, LoopEvents.EPOCH_END) == [3, 7]
    assert steps_with(trace, LoopEvents.TRAINING_END) == [7]


@pytest.mark.parametrize(
    ("make_dataset", "max_epochs", "max_steps"),
    [
        pytest.param(known_dataset, 3, None, id="known"),
        pytest.param(unknown_dataset, 3, None, id="unknown"),
        pytest.param(infinite_dataset, None, 9, id="infinite"),
    ],
)
@pytest.mark.parametrize("stop_after", [0, 2, 3, 5])
def test_resume_mid_run_yields_what_an_uninterrupted_run_yields(
    make_dataset: Callable[[], tf.data.Dataset],
    max_epochs: int | None,
    max_steps: int | None,
    stop_after: int,
) -> None:
    def make_loop() -> Loop[tf.Tensor]:
        events = {"Update": Event(every_n_steps=2), "Once": Event(at_step=stop_after + 1)}
        return Loop(make_dataset(), max_epochs=max_epochs, max_steps=max_steps, events=events)

    uninterrupted = run(make_loop())
    first = make_loop()
    before: Trace = []
    for batch, fired in first:
        before.append((first.state.step, first.state.epoch, batch.numpy().tolist(), fired))
        if first.state.step == stop_after:
            saved = first.state_dict()
            break
    second = make_loop()
    second.load_state_dict(saved)
    after = run(second)

    assert before + after == uninterrupted
