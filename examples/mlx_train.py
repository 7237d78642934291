"""dloop with MLX: a small mlx.nn regressor trained with mlx.optimizers.

Run from a checkout, with mlx installed (``mlx[cpu]`` on Linux):  python examples/mlx_train.py

The loop is the README's: gradient accumulation every 4 steps, a log line every 64 steps,
a learning-rate decay at step 256, and a validation pass at the end of every epoch. MLX
has no data loader, so the data is a small class: ``len`` is the epoch length, and
``set_epoch``, which the loop calls before each pass, picks that epoch's shuffle.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from dloop import Event, Loop, LoopEvents

Batch = tuple[mx.array, mx.array]
ACCUMULATE = 4
EPOCHS = 6


def make_dataset(samples: int, seed: int) -> Batch:
    """Noisy samples of y = sin(2*x0) + 1.5*x0 - 2*x1 + 0.5*x2 + x3, as (x, y) arrays."""
    x_key, noise_key = mx.random.split(mx.random.key(seed))
    x = mx.random.uniform(-1.0, 1.0, shape=(samples, 4), key=x_key)
    weights = mx.array([[1.5], [-2.0], [0.5], [1.0]])
    noise = 0.05 * mx.random.normal(shape=(samples, 1), key=noise_key)
    return x, mx.sin(2.0 * x[:, :1]) + x @ weights + noise


class ShuffledBatches:
    """Batches of (x, y) in a new order each epoch, chosen by ``set_epoch``."""

    def __init__(self, data: Batch, *, batch_size: int, seed: int) -> None:
        self.x, self.y = data
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = mx.random.permutation(len(self.x), key=mx.random.key(self.seed + self.epoch))
        for start in range(0, len(self.x), self.batch_size):
            indices = order[start : start + self.batch_size]
            yield self.x[indices], self.y[indices]


def loss_function(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return mx.mean(mx.square(model(x) - y))


def main() -> None:
    mx.random.seed(0)
    train = ShuffledBatches(make_dataset(2048, seed=0), batch_size=32, seed=0)
    validation_x, validation_y = make_dataset(512, seed=1)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
    mx.eval(model.parameters())
    optimizer = optim.Adam(learning_rate=0.01)
    loss_and_gradients = nn.value_and_grad(model, loss_function)
    summed: dict[str, Any] | None = None

    def validation_mse() -> float:
        return float(loss_function(model, validation_x, validation_y))

    loop = Loop(
        train,
        max_epochs=EPOCHS,
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=64),
            "DecayLR": Event(at_step=256),
        },
    )
    print(
        f"training for {len(loop)} steps ({len(train)} batches x {EPOCHS} epochs), "
        f"an update every {ACCUMULATE} batches"
    )
    print(f"before training  validation mse {validation_mse():.4f}")
    started = time.perf_counter()
    for (x, y), events in loop:
        # forward and backward; the gradients are summed until the next update
        loss, gradients = loss_and_gradients(model, x, y)
        summed = gradients if summed is None else tree_map(mx.add, summed, gradients)
        if "Update" in events:  # the optimizer step, once per 4 batches
            optimizer.update(model, tree_map(lambda total: total / ACCUMULATE, summed))
            summed = None
        mx.eval(loss, model.parameters(), optimizer.state, summed)
        if "DecayLR" in events:
            optimizer.learning_rate = optimizer.learning_rate / 10
            print(
                f"step {loop.state.step:4d}  learning rate decayed to "
                f"{float(optimizer.learning_rate):.4g}"
            )
        if "Log" in events:
            state = loop.state
            print(
                f"step {state.step:4d}  epoch {state.epoch}  train loss {float(loss):.4f}  "
                f"progress {state.progress:.0%}"
            )
        if LoopEvents.EPOCH_END in events:
            print(f"epoch {loop.state.epoch} done  validation mse {validation_mse():.4f}")

    print(
        f"{int(optimizer.step)} updates in {time.perf_counter() - started:.1f} s; "
        f"final validation mse {validation_mse():.4f}"
    )


if __name__ == "__main__":
    main()
