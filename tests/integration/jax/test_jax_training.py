"""A small MLP in pure ``jax.numpy`` and ``jax.grad``, trained with the README's loop.

The batches come through ``prefetch_to_device``; the loop's events drive the training:
``Update`` applies the gradients accumulated over ``ACCUMULATE`` batches, ``DecayLR``
divides the learning rate once, ``Checkpoint`` (every second of a manual clock) saves
the state, and ``EPOCH_END`` runs a validation pass.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dloop import Event, Loop, LoopEvents
from dloop.testing import ManualClock
from dloop_jax import prefetch_to_device

Params = dict[str, jax.Array]
Batch = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]

BATCH_SIZE = 32
BATCHES_PER_EPOCH = 16
EPOCHS = 6
TOTAL_STEPS = EPOCHS * BATCHES_PER_EPOCH
ACCUMULATE = 4
DECAY_STEP = 60
LEARNING_RATE = 0.2
STEP_SECONDS = 0.25  # the manual clock's tick: every step "takes" a quarter second


def synthetic_batches(count: int, seed: int) -> list[Batch]:
    """Noisy samples of y = sin(2*x0) - x1 * x2 + 0.5*x3, in float32 batches."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        x = rng.uniform(-1.0, 1.0, size=(BATCH_SIZE, 4)).astype(np.float32)
        y = np.sin(2 * x[:, 0]) - x[:, 1] * x[:, 2] + 0.5 * x[:, 3]
        y += rng.normal(0.0, 0.02, size=BATCH_SIZE)
        batches.append((x, y[:, None].astype(np.float32)))
    return batches


def init_params(seed: int) -> Params:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "w1": jax.random.normal(k1, (4, 32)) * 0.5,
        "b1": jnp.zeros(32),
        "w2": jax.random.normal(k2, (32, 1)) * 0.2,
        "b2": jnp.zeros(1),
    }


def mean_squared_error(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


@jax.jit
def accumulate(params: Params, summed: Params, x: jax.Array, y: jax.Array) -> Params:
    grads = jax.grad(mean_squared_error)(params, x, y)
    total: Params = jax.tree.map(jnp.add, summed, grads)
    return total


@jax.jit
def apply_update(params: Params, summed: Params, learning_rate: jax.Array) -> Params:
    updated: Params = jax.tree.map(lambda p, g: p - learning_rate * g / ACCUMULATE, params, summed)
    return updated


def validation_loss(params: Params, batches: list[Batch]) -> float:
    losses = [float(mean_squared_error(params, jnp.asarray(x), jnp.asarray(y))) for x, y in batches]
    return sum(losses) / len(losses)


@dataclass
class Run:
    """What a training run did, step by step."""

    params: Params
    validation_losses: list[float] = field(default_factory=list)
    events: dict[Hashable, list[int]] = field(default_factory=dict)
    learning_rates: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)


def train(
    train_batches: list[Batch],
    validation: list[Batch],
    *,
    stop_after_step: int | None = None,
    resume_from: str | None = None,
) -> Run:
    """The README's loop; ``stop_after_step`` breaks out after that step and leaves a last
    checkpoint, ``resume_from`` continues from one."""
    learning_rate = LEARNING_RATE
    params = init_params(seed=0)
    summed = jax.tree.map(jnp.zeros_like, params)
    loop = Loop(
        prefetch_to_device(train_batches),
        max_epochs=EPOCHS,
        clock=ManualClock(tick=STEP_SECONDS),
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=25),
            "DecayLR": Event(at_step=DECAY_STEP),
            "Checkpoint": Event(every_n_seconds=1.0),
            "Warn": Event(at_time=10.0),
        },
    )
    if resume_from is not None:
        saved = json.loads(resume_from)
        loop.load_state_dict(saved["loop"])
        params = {name: jnp.asarray(value) for name, value in saved["params"].items()}
        summed = {name: jnp.asarray(value) for name, value in saved["summed"].items()}
        learning_rate = saved["learning_rate"]
    run = Run(params=params)
    for (x, y), events in loop:
        summed = accumulate(params, summed, x, y)
        if "Update" in events:
            params = apply_update(params, summed, jnp.float32(learning_rate))
            summed = jax.tree.map(jnp.zeros_like, summed)
        if "DecayLR" in events:
            learning_rate /= 10
        for key in events:
            run.events.setdefault(key, []).append(loop.state.step)
        run.learning_rates.append(learning_rate)
        run.elapsed.append(loop.state.elapsed)
        if LoopEvents.EPOCH_END in events:
            run.validation_losses.append(validation_loss(params, validation))
        if "Checkpoint" in events or loop.state.step == stop_after_step:
            checkpoint = {
                "loop": loop.state_dict(),
                "params": {name: np.asarray(value).tolist() for name, value in params.items()},
                "summed": {name: np.asarray(value).tolist() for name, value in summed.items()},
                "learning_rate": learning_rate,
            }
            run.checkpoints.append(json.dumps(checkpoint))
        if loop.state.step == stop_after_step:
            break
    run.params = params
    return run


def test_validation_loss_falls_every_epoch() -> None:
    validation = synthetic_batches(8, seed=1)
    initial = validation_loss(init_params(seed=0), validation)
    run = train(synthetic_batches(BATCHES_PER_EPOCH, seed=0), validation)
    losses = [initial, *run.validation_losses]
    assert len(run.validation_losses) == EPOCHS
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.25 * losses[0], losses


def test_events_drive_the_updates_the_decay_and_the_checkpoints() -> None:
    run = train(synthetic_batches(BATCHES_PER_EPOCH, seed=0), synthetic_batches(2, seed=1))
    assert run.events["Update"] == list(range(ACCUMULATE - 1, TOTAL_STEPS, ACCUMULATE))
    assert run.events["DecayLR"] == [DECAY_STEP]
    assert run.learning_rates[DECAY_STEP - 1] == LEARNING_RATE
    assert run.learning_rates[DECAY_STEP] == LEARNING_RATE / 10
    assert run.events[LoopEvents.EPOCH_END] == list(
        range(BATCHES_PER_EPOCH - 1, TOTAL_STEPS, BATCHES_PER_EPOCH)
    )
    # Time events fire on the first step whose elapsed time reaches each deadline.
    deadlines = range(1, int(run.elapsed[-1]) + 1)
    expected = [next(s for s, t in enumerate(run.elapsed) if t >= k) for k in deadlines]
    assert len(expected) >= 10
    assert run.events["Checkpoint"] == expected
    assert run.events["Warn"] == [next(s for s, t in enumerate(run.elapsed) if t >= 10.0)]
    assert run.events[LoopEvents.TRAINING_END] == [TOTAL_STEPS - 1]


def test_a_resumed_run_ends_with_the_parameters_of_an_uninterrupted_one() -> None:
    train_batches = synthetic_batches(BATCHES_PER_EPOCH, seed=0)
    validation = synthetic_batches(2, seed=1)
    uninterrupted = train(train_batches, validation)
    # Interrupted in the middle of epoch 2 and of an accumulation window.
    first = train(train_batches, validation, stop_after_step=2 * BATCHES_PER_EPOCH + 5)
    resumed = train(train_batches, validation, resume_from=first.checkpoints[-1])
    assert resumed.events["Update"][0] == 2 * BATCHES_PER_EPOCH + 7
    assert resumed.events[LoopEvents.EPOCH_START][0] == 3 * BATCHES_PER_EPOCH
    assert resumed.events["DecayLR"] == [DECAY_STEP]
    for name, value in uninterrupted.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
