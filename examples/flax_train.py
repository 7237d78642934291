"""dloop with Flax NNX, optax and Orbax: an MLP regression, checkpointed and resumable.

Run from a checkout (with flax, optax and orbax-checkpoint installed next to
`pip install -e "packages/dloop-core[jax]" -e packages/dloop-jax`):

    python examples/flax_train.py                        # a fresh run, checkpoints in a temp dir
    python examples/flax_train.py --checkpoint ckpt      # resumes from ckpt's latest step

Flax NNX and optax own the model, the optimizer and the jitted steps; Orbax's
`CheckpointManager` owns the storage, the asynchronous saves and how many checkpoints are
kept; dloop decides when: gradient accumulation (`optimizer.update` every 4 steps, the
gradients summed on every step), a log line every 50 steps, a checkpoint every 0.5 seconds
of training time (and at the end), a validation pass at every `EPOCH_END`. Each checkpoint
holds two Orbax items side by side: `state` (model, optimizer and the gradients summed so
far) and `loop` (`loop.state_dict()` as JSON), so a resume continues on the very batch,
epoch and accumulation window where the run stopped. `--stop-after-steps N` breaks out
after N steps, as an interruption would, leaving a checkpoint of step N - 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax  # type: ignore[import-untyped]  # no py.typed
import orbax.checkpoint as ocp  # type: ignore[import-untyped]  # no py.typed
from flax import nnx

from dloop import Event, Loop, LoopEvents
from dloop_jax import prefetch_to_device

Array = np.ndarray[Any, Any]
Batch = tuple[Array, Array]
State = nnx.State[Any, Any]

BATCH_SIZE = 32
ACCUMULATE = 4
EPOCHS = 5
LEARNING_RATE = 1e-2
CHECKPOINT_SECONDS = 0.5
KEEP_CHECKPOINTS = 3


def synthetic_data(count: int, seed: int) -> Batch:
    """``count`` noisy samples of y = sin(2*x0) - x1*x2 + 0.5*x3, as float32 arrays."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(count, 4)).astype(np.float32)
    y = np.sin(2 * x[:, 0]) - x[:, 1] * x[:, 2] + 0.5 * x[:, 3]
    y += rng.normal(0.0, 0.02, size=count)
    return x, y[:, None].astype(np.float32)


class Batches:
    """Re-iterable numpy batches of a fixed data set, reshuffled for every epoch.

    The order of an epoch depends on ``seed + epoch`` only: dloop calls ``set_epoch``
    before every pass, a resume's first one included, so a resumed run sees the batches of
    an uninterrupted one. A last partial batch is dropped.
    """

    def __init__(self, x: Array, y: Array, *, batch_size: int, seed: int) -> None:
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the next pass with the order of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.x))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield self.x[rows], self.y[rows]


class MLP(nnx.Module):
    """Four inputs, one tanh hidden layer, one output."""

    def __init__(self, *, hidden: int, rngs: nnx.Rngs) -> None:
        self.hidden = nnx.Linear(4, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.hidden(x)))


def mean_squared_error(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def accumulate(model: MLP, summed: State, x: jax.Array, y: jax.Array) -> tuple[State, jax.Array]:
    """Add this batch's gradient to ``summed``; also return the batch's loss."""
    loss, grads = nnx.value_and_grad(mean_squared_error)(model, x, y)
    total: State = jax.tree.map(jnp.add, summed, grads)
    return total, loss


@nnx.jit
def apply_update(model: MLP, optimizer: nnx.Optimizer[MLP], summed: State) -> State:
    """One optax step with the mean of the summed gradients; return zeroed gradients."""
    optimizer.update(model, jax.tree.map(lambda g: g / ACCUMULATE, summed))
    zeros: State = jax.tree.map(jnp.zeros_like, summed)
    return zeros


@nnx.jit
def batch_mse(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return mean_squared_error(model, x, y)


def validation_mse(model: MLP, data: Batches) -> float:
    losses = [float(batch_mse(model, jnp.asarray(x), jnp.asarray(y))) for x, y in data]
    return sum(losses) / len(losses)


@dataclass
class Training:
    """What the run trains and carries from step to step (everything a checkpoint holds
    besides the loop's position)."""

    model: MLP
    optimizer: nnx.Optimizer[MLP]
    summed: State  # gradients summed since the last update

    @classmethod
    def new(cls, seed: int) -> Training:
        model = MLP(hidden=32, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(
            model, optax.adamw(LEARNING_RATE, weight_decay=1e-4), wrt=nnx.Param
        )
        summed = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
        return cls(model, optimizer, summed)

    def state(self) -> dict[str, State]:
        """The pytree that Orbax saves as the ``state`` item."""
        return {
            "model": nnx.state(self.model),
            "optimizer": nnx.state(self.optimizer),
            "summed": self.summed,
        }

    def load(self, state: dict[str, State]) -> None:
        """Put a restored ``state`` item back into the model and the optimizer."""
        nnx.update(self.model, state["model"])
        nnx.update(self.optimizer, state["optimizer"])
        self.summed = state["summed"]


def make_loop(data: Batches, *, clock: Callable[[], float] = time.monotonic) -> Loop[Any]:
    """The README's loop over ``data``, put on the device two batches ahead."""
    return Loop(
        prefetch_to_device(data, size=2),
        max_epochs=EPOCHS,
        clock=clock,
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=50),
            "Checkpoint": Event(every_n_seconds=CHECKPOINT_SECONDS),
        },
    )


def checkpoint_manager(directory: Path) -> ocp.CheckpointManager:
    """Orbax's manager for ``directory``: asynchronous saves, the last few kept."""
    return ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=KEEP_CHECKPOINTS),
    )


def save_checkpoint(manager: ocp.CheckpointManager, loop: Loop[Any], training: Training) -> None:
    """Start an asynchronous save of the step just done: the state and the loop, side by
    side. ``force=True``: dloop decided that this step is saved, not Orbax's policy."""
    step = loop.state.step
    if step in manager.all_steps():  # a step saved already (Checkpoint and the end)
        return
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(training.state()),
            loop=ocp.args.JsonSave(loop.state_dict()),
        ),
        force=True,
    )


def restore_checkpoint(manager: ocp.CheckpointManager, loop: Loop[Any], training: Training) -> int:
    """Restore the latest checkpoint into ``training`` and ``loop``; return its step, or
    -1 when ``manager`` has none. Call it before iterating."""
    step: int | None = manager.latest_step()
    if step is None:
        return -1
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, training.state())
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore()
        ),
    )
    training.load(restored["state"])
    loop.load_state_dict(restored["loop"])
    return step


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="Orbax checkpoint directory; resumes from its latest step (default: a temp dir)",
    )
    parser.add_argument(
        "--stop-after-steps",
        type=int,
        default=None,
        help="break out once this many steps are done, as an interruption would",
    )
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    directory = arguments.checkpoint or Path(tempfile.mkdtemp(prefix="dloop-flax-"))
    x, y = synthetic_data(2048, seed=0)
    train = Batches(x, y, batch_size=BATCH_SIZE, seed=0)
    vx, vy = synthetic_data(512, seed=1)
    validation = Batches(vx, vy, batch_size=128, seed=1)

    training = Training.new(seed=0)
    loop = make_loop(train)
    manager = checkpoint_manager(directory)
    resumed = restore_checkpoint(manager, loop, training)
    if resumed >= 0:
        print(f"resumed from the checkpoint of step {resumed} in {directory}")
    print(f"training for {len(loop)} steps of {len(train)} batches per epoch")
    print(f"start          validation mse {validation_mse(training.model, validation):.4f}")
    for (bx, by), events in loop:
        training.summed, loss = accumulate(training.model, training.summed, bx, by)
        if "Update" in events:
            training.summed = apply_update(training.model, training.optimizer, training.summed)
        if "Log" in events:
            state = loop.state
            print(
                f"step {state.step:4d}  epoch {state.epoch}  batch mse {float(loss):.4f}  "
                f"progress {state.progress:.0%}"
            )
        if LoopEvents.EPOCH_END in events:
            print(
                f"epoch {loop.state.epoch} done   "
                f"validation mse {validation_mse(training.model, validation):.4f}"
            )
        stopping = loop.state.step + 1 == arguments.stop_after_steps
        if "Checkpoint" in events or LoopEvents.TRAINING_END in events or stopping:
            save_checkpoint(manager, loop, training)
        if stopping:
            print(f"stopped after step {loop.state.step}, as if interrupted")
            break
    manager.wait_until_finished()  # Orbax saves in the background: finish before exiting
    print(f"done in {loop.state.elapsed:.1f} s; checkpoints {manager.all_steps()} in {directory}")
    manager.close()


if __name__ == "__main__":
    main()
