"""A small ``mlx.nn`` model trained with ``mlx.optimizers`` in the README's loop.

The data is what MLX users write by hand: a list of batches of ``mlx.core`` arrays (the
loop iterates it again for each epoch), or a small class with ``__len__``, ``__iter__``
and ``set_epoch`` that reshuffles each epoch. ``Update`` (every n steps) applies the
gradients accumulated since the last update, ``EPOCH_END`` runs a validation pass, and
``TRAINING_END`` flushes a last partial accumulation window.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import pytest
from mlx.utils import tree_flatten, tree_map

from dloop import Event, Loop, LoopEvents

Batch = tuple[mx.array, mx.array]
SAMPLES = 256
BATCH_SIZE = 16
BATCHES_PER_EPOCH = SAMPLES // BATCH_SIZE
EPOCHS = 5
TOTAL_STEPS = EPOCHS * BATCHES_PER_EPOCH
EVERY_EPOCH_END = [BATCHES_PER_EPOCH * (epoch + 1) - 1 for epoch in range(EPOCHS)]


def synthetic_data(seed: int) -> Batch:
    """Noisy samples of y = 1.5*x0 - 2*x1 + 0.5*x2 + x3 + 0.3."""
    key = mx.random.key(seed)
    x_key, noise_key = mx.random.split(key)
    x = mx.random.uniform(-1.0, 1.0, shape=(SAMPLES, 4), key=x_key)
    noise = 0.05 * mx.random.normal(shape=(SAMPLES, 1), key=noise_key)
    y = x @ mx.array([[1.5], [-2.0], [0.5], [1.0]]) + 0.3 + noise
    return x, y


def batches_of(data: Batch, batch_size: int) -> list[Batch]:
    x, y = data
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


class ShuffledBatches:
    """The batches of (x, y), in a new order each epoch: the order is set by ``set_epoch``."""

    def __init__(self, data: Batch, *, batch_size: int, seed: int) -> None:
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.epochs_set: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_set.append(epoch)

    def __len__(self) -> int:
        return -(-len(self.data[0]) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        x, y = self.data
        order = mx.random.permutation(len(x), key=mx.random.key(self.seed + self.epoch))
        for start in range(0, len(x), self.batch_size):
            indices = order[start : start + self.batch_size]
            yield x[indices], y[indices]


def loss_function(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return mx.mean(mx.square(model(x) - y))


def mean_squared_error(model: nn.Module, batches: Iterable[Batch]) -> float:
    errors = [float(loss_function(model, x, y)) for x, y in batches]
    return sum(errors) / len(errors)


def parameter_checksum(model: nn.Module) -> float:
    leaves = cast(list[tuple[str, mx.array]], tree_flatten(model.parameters()))
    return sum(float(mx.sum(value)) for _, value in leaves)


def divided(tree: dict[str, Any], count: int) -> dict[str, Any]:
    """Every array of ``tree`` divided by ``count``: summed gradients to their mean."""
    result: dict[str, Any] = tree_map(lambda total: total / count, tree)
    return result


@dataclass
class Record:
    """What happened during a run, step by step."""

    losses: list[float] = field(default_factory=list)
    events: dict[Hashable, list[int]] = field(default_factory=dict)
    validation_losses: list[float] = field(default_factory=list)
    parameters_changed: list[int] = field(default_factory=list)
    optimizer_steps: int = 0
    length: int = 0


def train(
    data: Iterable[Batch], *, accumulate: int, max_epochs: int, max_steps: int | None = None
) -> Record:
    """Train a fresh model with the README's loop; gradients are applied on ``Update``."""
    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
    mx.eval(model.parameters())
    optimizer = optim.Adam(learning_rate=0.02)
    loss_and_gradients = nn.value_and_grad(model, loss_function)
    validation = batches_of(synthetic_data(seed=1), 64)

    record = Record(validation_losses=[mean_squared_error(model, validation)])
    summed: dict[str, Any] | None = None
    window = 0
    checksum = parameter_checksum(model)
    loop = Loop(
        data,
        max_epochs=max_epochs,
        max_steps=max_steps,
        events={"Update": Event(every_n_steps=accumulate)},
    )
    record.length = len(loop)
    for (x, y), events in loop:
        loss, gradients = loss_and_gradients(model, x, y)
        summed = gradients if summed is None else tree_map(mx.add, summed, gradients)
        window += 1
        if "Update" in events or LoopEvents.TRAINING_END in events:
            optimizer.update(model, divided(summed, window))
            summed, window = None, 0
        mx.eval(loss, model.parameters(), optimizer.state)
        record.losses.append(float(loss))
        for key in events:
            record.events.setdefault(key, []).append(loop.state.step)
        if parameter_checksum(model) != checksum:
            record.parameters_changed.append(loop.state.step)
            checksum = parameter_checksum(model)
        if LoopEvents.EPOCH_END in events:
            record.validation_losses.append(mean_squared_error(model, validation))
    record.optimizer_steps = int(optimizer.step)
    return record


def test_training_over_a_list_of_batches_with_accumulation_every_4_steps() -> None:
    batches = batches_of(synthetic_data(seed=0), BATCH_SIZE)
    assert len(batches) == BATCHES_PER_EPOCH

    record = train(batches, accumulate=4, max_epochs=EPOCHS)

    assert record.length == len(record.losses) == TOTAL_STEPS
    updates = list(range(3, TOTAL_STEPS, 4))
    assert record.events["Update"] == updates
    assert record.parameters_changed == updates
    assert record.optimizer_steps == TOTAL_STEPS // 4
    assert record.events[LoopEvents.EPOCH_START] == [0, 16, 32, 48, 64]
    assert record.events[LoopEvents.EPOCH_END] == EVERY_EPOCH_END
    assert record.events[LoopEvents.TRAINING_END] == [TOTAL_STEPS - 1]
    # Loss falls: on held-out data after each epoch, and on the training batches.
    assert len(record.validation_losses) == EPOCHS + 1
    assert record.validation_losses[-1] < 0.2 * record.validation_losses[0]
    first_epoch = sum(record.losses[:BATCHES_PER_EPOCH]) / BATCHES_PER_EPOCH
    last_epoch = sum(record.losses[-BATCHES_PER_EPOCH:]) / BATCHES_PER_EPOCH
    assert last_epoch < 0.3 * first_epoch


def test_accumulation_windows_count_across_epochs_and_the_last_partial_one_is_applied() -> None:
    batches = batches_of(synthetic_data(seed=0), BATCH_SIZE)

    record = train(batches, accumulate=3, max_epochs=EPOCHS)

    # 16 batches per epoch: windows of 3 cross epoch boundaries; steps 78 and 79 are left
    # and applied on TRAINING_END.
    updates = list(range(2, TOTAL_STEPS, 3))
    assert updates[-1] == 77
    assert record.events["Update"] == updates
    assert record.parameters_changed == [*updates, 79]
    assert record.optimizer_steps == len(updates) + 1
    assert record.events[LoopEvents.EPOCH_END] == EVERY_EPOCH_END
    assert record.events[LoopEvents.TRAINING_END] == [79]
    assert record.validation_losses[-1] < 0.2 * record.validation_losses[0]


def test_max_steps_ends_training_inside_an_epoch() -> None:
    batches = batches_of(synthetic_data(seed=0), BATCH_SIZE)

    record = train(batches, accumulate=4, max_epochs=EPOCHS, max_steps=40)

    assert record.length == len(record.losses) == 40
    assert record.events[LoopEvents.EPOCH_END] == [15, 31]
    assert record.events[LoopEvents.TRAINING_END] == [39]
    assert record.optimizer_steps == 10


def test_set_epoch_reshuffles_each_epoch_and_training_still_converges() -> None:
    data = ShuffledBatches(synthetic_data(seed=0), batch_size=BATCH_SIZE, seed=7)

    record = train(data, accumulate=4, max_epochs=EPOCHS)

    assert data.epochs_set == list(range(EPOCHS))
    assert record.events[LoopEvents.EPOCH_END] == EVERY_EPOCH_END
    assert record.events[LoopEvents.TRAINING_END] == [TOTAL_STEPS - 1]
    assert record.validation_losses[-1] < 0.2 * record.validation_losses[0]


@pytest.mark.parametrize("stop_after", [0, 9, 15, 40])
def test_resume_sees_the_batches_and_events_of_an_uninterrupted_run(stop_after: int) -> None:
    def make_loop() -> Loop[Batch]:
        data = ShuffledBatches(synthetic_data(seed=0), batch_size=BATCH_SIZE, seed=7)
        events = {"Update": Event(every_n_steps=4), "Once": Event(at_step=stop_after + 1)}
        return Loop(data, max_epochs=3, events=events)

    def trace(loop: Loop[Batch]) -> Iterator[tuple[int, int, object, frozenset[Hashable]]]:
        for (x, _), events in loop:
            yield loop.state.step, loop.state.epoch, x[:, 0].tolist(), events

    uninterrupted = list(trace(make_loop()))
    first = make_loop()
    before = []
    for item in trace(first):
        before.append(item)
        if item[0] == stop_after:
            saved = first.state_dict()
            break
    second = make_loop()
    second.load_state_dict(saved)
    after = list(trace(second))

    assert [step for step, *_ in before + after] == list(range(3 * BATCHES_PER_EPOCH))
    assert before + after == uninterrupted
