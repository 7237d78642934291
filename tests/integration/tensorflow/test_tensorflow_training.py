"""A small Keras model trained with ``tf.GradientTape`` in the README's loop.

The loop's events drive the training: ``Update`` (every n steps) applies the gradients
accumulated since the last update, ``EPOCH_END`` runs a validation pass, and
``TRAINING_END`` flushes a last partial accumulation window and ends the run.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from dloop import Event, Loop, LoopEvents

SAMPLES = 256
BATCH_SIZE = 16
BATCHES_PER_EPOCH = SAMPLES // BATCH_SIZE
EPOCHS = 5
TOTAL_STEPS = EPOCHS * BATCHES_PER_EPOCH


def synthetic_data(seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Noisy samples of y = 1.5*x0 - 2*x1 + 0.5*x2 + x3 + 0.3."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(SAMPLES, 4)).astype(np.float32)
    y = x @ np.array([1.5, -2.0, 0.5, 1.0], dtype=np.float32) + 0.3
    y += rng.normal(0.0, 0.05, size=SAMPLES)
    return x, y[:, None].astype(np.float32)


def known_cardinality() -> tf.data.Dataset:
    x, y = synthetic_data(seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    return dataset.shuffle(SAMPLES, seed=0).batch(BATCH_SIZE)


def unknown_cardinality() -> tf.data.Dataset:
    """The same batches, behind a filter that hides how many there are."""
    return known_cardinality().filter(lambda x, y: tf.shape(x)[0] > 0)


def infinite_cardinality() -> tf.data.Dataset:
    return known_cardinality().repeat()


@dataclass
class Record:
    """What happened during a run, step by step."""

    losses: list[float] = field(default_factory=list)
    events: dict[Hashable, list[int]] = field(default_factory=dict)
    validation_losses: list[float] = field(default_factory=list)
    optimizer_updates: int = 0
    last_state_step: int = -1


def mean_squared_error(model: tf.keras.Model, dataset: tf.data.Dataset) -> float:
    errors = [float(tf.reduce_mean(tf.square(model(x, training=False) - y))) for x, y in dataset]
    return sum(errors) / len(errors)


def train(
    dataset: tf.data.Dataset,
    *,
    accumulate: int,
    validation: tf.data.Dataset,
    max_epochs: int | None = None,
    max_steps: int | None = None,
) -> Record:
    """Train a fresh model with the README's loop; gradients are applied on ``Update``."""
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(4,)),
            tf.keras.layers.Dense(32, activation="tanh"),
            tf.keras.layers.Dense(1),
        ]
    )
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.02)
    variables = model.trainable_variables
    summed = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    @tf.function
    def add_gradients(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        for total, gradient in zip(summed, tape.gradient(loss, variables), strict=True):
            total.assign_add(gradient)
        return loss

    def apply_gradients(window: int) -> None:
        optimizer.apply_gradients(
            [(total / window, v) for total, v in zip(summed, variables, strict=True)]
        )
        for total in summed:
            total.assign(tf.zeros_like(total))

    record = Record(validation_losses=[mean_squared_error(model, validation)])
    window = 0
    loop = Loop(
        dataset,
        max_epochs=max_epochs,
        max_steps=max_steps,
        events={"Update": Event(every_n_steps=accumulate)},
    )
    for (x, y), events in loop:
        record.losses.append(float(add_gradients(x, y)))
        window += 1
        for key in events:
            record.events.setdefault(key, []).append(loop.state.step)
        if "Update" in events or LoopEvents.TRAINING_END in events:
            apply_gradients(window)
            window = 0
        if LoopEvents.EPOCH_END in events or LoopEvents.TRAINING_END in events:
            record.validation_losses.append(mean_squared_error(model, validation))
    record.optimizer_updates = int(optimizer.iterations.numpy())
    record.last_state_step = loop.state.step
    return record


@pytest.fixture(scope="module")
def validation() -> tf.data.Dataset:
    x, y = synthetic_data(seed=1)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(64)


EVERY_EPOCH_END = [BATCHES_PER_EPOCH * (epoch + 1) - 1 for epoch in range(EPOCHS)]


@pytest.mark.parametrize(
    ("make_dataset", "max_epochs", "max_steps", "epoch_ends"),
    [
        pytest.param(known_cardinality, EPOCHS, None, EVERY_EPOCH_END, id="known"),
        pytest.param(unknown_cardinality, EPOCHS, None, EVERY_EPOCH_END, id="unknown"),
        pytest.param(infinite_cardinality, None, TOTAL_STEPS, [], id="infinite"),
    ],
)
def test_training_with_accumulation_every_4_steps(
    make_dataset: Callable[[], tf.data.Dataset],
    max_epochs: int | None,
    max_steps: int | None,
    epoch_ends: list[int],
    validation: tf.data.Dataset,
) -> None:
    record = train(
        make_dataset(),
        accumulate=4,
        validation=validation,
        max_epochs=max_epochs,
        max_steps=max_steps,
    )

    assert len(record.losses) == TOTAL_STEPS
    assert record.last_state_step == TOTAL_STEPS - 1
    assert record.events["Update"] == list(range(3, TOTAL_STEPS, 4))
    assert record.optimizer_updates == TOTAL_STEPS // 4
    assert record.events.get(LoopEvents.EPOCH_END, []) == epoch_ends
    assert record.events[LoopEvents.TRAINING_END] == [TOTAL_STEPS - 1]
    assert LoopEvents.INTERRUPTED not in record.events
    # Loss falls: on held-out data, and on the training batches from first to last epoch.
    first_validation, *_, last_validation = record.validation_losses
    assert last_validation < 0.2 * first_validation
    first_epoch = np.mean(record.losses[:BATCHES_PER_EPOCH])
    last_epoch = np.mean(record.losses[-BATCHES_PER_EPOCH:])
    assert last_epoch < 0.3 * first_epoch


def test_accumulation_windows_count_across_epochs_and_the_last_partial_one_is_applied(
    validation: tf.data.Dataset,
) -> None:
    record = train(known_cardinality(), accumulate=3, validation=validation, max_epochs=EPOCHS)

    # 16 batches per epoch: windows of 3 cross epoch boundaries; steps 78 and 79 are left.
    assert record.events["Update"] == list(range(2, TOTAL_STEPS, 3))
    assert record.events["Update"][-1] == 77
    assert record.optimizer_updates == len(record.events["Update"]) + 1
    assert record.events[LoopEvents.EPOCH_END] == EVERY_EPOCH_END
    assert record.events[LoopEvents.TRAINING_END] == [79]
    assert record.validation_losses[-1] < 0.2 * record.validation_losses[0]


def test_a_stop_request_ends_training_on_the_next_batch(validation: tf.data.Dataset) -> None:
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(1)])
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.1)
    loop = Loop(known_cardinality(), max_epochs=EPOCHS, events={"Check": Event(at_step=20)})
    last_events: frozenset[Hashable] = frozenset()
    validation_loss = mean_squared_error(model, validation)
    for (x, y), events in loop:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        if "Check" in events:
            # early stopping: the validation loss has improved enough
            assert mean_squared_error(model, validation) < validation_loss
            loop.request_stop()
        last_events = events

    assert loop.state.step == 21
    assert loop.state.epoch == 1
    assert last_events == {LoopEvents.TRAINING_END, LoopEvents.INTERRUPTED}
    assert int(optimizer.iterations.numpy()) == 22
