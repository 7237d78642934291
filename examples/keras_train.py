"""dloop with Keras 3: a small Keras MLP regression trained on JAX, checkpointed by Keras.

Run from a checkout (after `pip install keras jax -e packages/dloop-core`):

    KERAS_BACKEND=jax python examples/keras_train.py
    KERAS_BACKEND=jax python examples/keras_train.py --checkpoint ckpt --stop-after-steps 100
    KERAS_BACKEND=jax python examples/keras_train.py --checkpoint ckpt   # resumes at step 100

Keras owns the model, its layers, the optimizer, the loss and the `.keras` file; the
training step is Keras 3's JAX idiom (`model.stateless_call`, `optimizer.stateless_apply`,
`jax.value_and_grad`, `jax.jit`). dloop owns *when*: the loop is the README's, with
gradient accumulation every 4 steps, a log line every 64 steps, a checkpoint every 0.5
seconds of training time (and at the end) and a validation pass at every epoch's end.
The data reshuffles each epoch from `seed + epoch` in `set_epoch`, which dloop calls before
every epoch, resumes included, so a resumed run sees the batches of an uninterrupted one.
Ctrl-C (or SIGTERM) stops after the batch in flight and saves a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported

import jax
import jax.numpy as jnp
import keras  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import numpy.typing as npt

from dloop import Event, Loop, LoopEvents

Arrays = list[jax.Array]
Batch = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]

BATCH_SIZE = 32
ACCUMULATE = 4
EPOCHS = 5
CHECKPOINT_SECONDS = 0.5


def make_dataset(samples: int, seed: int) -> Batch:
    """Noisy samples of y = sin(2*x0) + 1.5*x0 - 2*x1 + 0.5*x2 + x3, as float32 arrays."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(samples, 4)).astype(np.float32)
    y = np.sin(2 * x[:, 0]) + x @ np.array([1.5, -2.0, 0.5, 1.0], dtype=np.float32)
    y += rng.normal(0.0, 0.05, size=samples)
    return x, y[:, None].astype(np.float32)


class ShuffledBatches:
    """Batches of ``(x, y)``, reshuffled for each epoch from ``seed + epoch``.

    The order depends only on the epoch that ``set_epoch`` was given, so a resumed run
    sees the same batches as an uninterrupted one. A last partial batch is dropped.
    """

    def __init__(
        self, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], batch_size: int, seed: int
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by dloop before every epoch, resumes included."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.x))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield self.x[rows], self.y[rows]


def build_model(seed: int = 0) -> Any:
    """A fresh Keras MLP, compiled with its optimizer so that ``model.save`` stores both."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(4,)),
            keras.layers.Dense(64, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)  # create its slots now, not on first use
    return model


@jax.tree_util.register_dataclass
@dataclass
class TrainState:
    """The values the jitted steps work on; Keras's variables hold them only at checkpoints."""

    trainable: Arrays
    non_trainable: Arrays
    optimizer: Arrays
    summed: Arrays  # gradients summed since the last update

    @classmethod
    def from_model(cls, model: Any, summed: Arrays | None = None) -> TrainState:
        """Read the model's and its optimizer's variables; no pending gradients by default."""
        trainable = [v.value for v in model.trainable_variables]
        return cls(
            trainable=trainable,
            non_trainable=[v.value for v in model.non_trainable_variables],
            optimizer=[v.value for v in model.optimizer.variables],
            summed=summed if summed is not None else [jnp.zeros_like(v) for v in trainable],
        )

    def write_to(self, model: Any) -> None:
        """Assign the values back into the model's and the optimizer's Keras variables."""
        pairs = [
            (model.trainable_variables, self.trainable),
            (model.non_trainable_variables, self.non_trainable),
            (model.optimizer.variables, self.optimizer),
        ]
        for variables, values in pairs:
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)


@dataclass
class Steps:
    """The jitted functions of one model: add a batch's gradients, update, evaluate."""

    accumulate: Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]
    update: Callable[[TrainState], TrainState]
    mean_squared_error: Callable[[TrainState, jax.Array, jax.Array], jax.Array]


def compile_steps(model: Any) -> Steps:
    """Build the training and evaluation steps of ``model`` in Keras 3's stateless style."""
    optimizer = model.optimizer

    def loss_fn(
        trainable: Arrays, non_trainable: Arrays, x: jax.Array, y: jax.Array
    ) -> tuple[jax.Array, Arrays]:
        predictions, non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return jnp.mean((predictions - y) ** 2), non_trainable

    gradient_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def accumulate(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
        (loss, non_trainable), grads = gradient_fn(state.trainable, state.non_trainable, x, y)
        summed = [total + grad for total, grad in zip(state.summed, grads, strict=True)]
        return TrainState(state.trainable, non_trainable, state.optimizer, summed), loss

    @jax.jit
    def update(state: TrainState) -> TrainState:
        mean = [total / ACCUMULATE for total in state.summed]
        trainable, optimizer_variables = optimizer.stateless_apply(
            state.optimizer, mean, state.trainable
        )
        zeros = [jnp.zeros_like(total) for total in state.summed]
        return TrainState(trainable, state.non_trainable, optimizer_variables, zeros)

    @jax.jit
    def mean_squared_error(state: TrainState, x: jax.Array, y: jax.Array) -> jax.Array:
        predictions, _ = model.stateless_call(state.trainable, state.non_trainable, x)
        return jnp.mean((predictions - y) ** 2)

    return Steps(accumulate, update, mean_squared_error)


def make_loop(
    data: Any,
    *,
    epochs: int = EPOCHS,
    max_steps: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    stop_signals: tuple[signal.Signals, ...] = (),
) -> Loop[Any]:
    """The README's loop: accumulate 4 batches per update, log, checkpoint on a timer."""
    return Loop(
        data,
        max_epochs=epochs,
        max_steps=max_steps,
        clock=clock,
        stop_signals=stop_signals,
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=64),
            "Checkpoint": Event(every_n_seconds=CHECKPOINT_SECONDS),
        },
    )


def save_checkpoint(directory: Path, model: Any, state: TrainState, loop: Loop[Any]) -> None:
    """Save through Keras, then point ``loop.json`` at the new files.

    Layout: ``step-NNNNNN/model.keras`` (architecture, weights, optimizer), beside it
    ``step-NNNNNN/gradients.npz`` (gradients summed since the last update, zeros on an
    ``Update`` step), and ``loop.json`` with ``loop.state_dict()`` and the name of that
    folder. ``loop.json`` is replaced atomically and last, so an interrupted save leaves
    the previous checkpoint whole; older folders are removed after it.
    """
    state.write_to(model)
    name = f"step-{loop.state.step:06d}"
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    np.savez(folder / "gradients.npz", *[np.asarray(total) for total in state.summed])
    temporary = directory / "loop.json.tmp"
    temporary.write_text(json.dumps({"weights": name, "loop": loop.state_dict()}))
    os.replace(temporary, directory / "loop.json")
    for old in directory.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old)


def load_checkpoint(directory: Path) -> tuple[Any, TrainState, dict[str, Any]]:
    """The model (with its optimizer), the training state and the loop's state dict."""
    saved = json.loads((directory / "loop.json").read_text())
    folder = directory / saved["weights"]
    model = keras.saving.load_model(folder / "model.keras")
    with np.load(folder / "gradients.npz") as gradients:
        summed = [jnp.asarray(gradients[f"arr_{i}"]) for i in range(len(gradients.files))]
    return model, TrainState.from_model(model, summed), saved["loop"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint folder; resumes from it")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument(
        "--stop-after-steps", type=int, help="end the run after this many steps, as if cut off"
    )
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        parser.error(f"this example needs KERAS_BACKEND=jax, not {keras.backend.backend()}")
    directory = args.checkpoint or Path(tempfile.mkdtemp(prefix="dloop-keras-"))

    train = ShuffledBatches(*make_dataset(2048, seed=0), batch_size=BATCH_SIZE, seed=0)
    x_val, y_val = (jnp.asarray(a) for a in make_dataset(512, seed=1))
    loop = make_loop(
        train,
        epochs=args.epochs,
        max_steps=args.stop_after_steps,
        stop_signals=(signal.SIGINT, signal.SIGTERM),
    )
    if (directory / "loop.json").exists():
        model, state, loop_state = load_checkpoint(directory)
        loop.load_state_dict(loop_state)
        print(f"resumed from {directory} after step {loop.state.step}")
    else:
        model = build_model()
        state = TrainState.from_model(model)
    steps = compile_steps(model)
    checkpoints = 0

    print(f"training for {len(loop)} steps on {keras.backend.backend()}")
    mse = float(steps.mean_squared_error(state, x_val, y_val))
    print(f"before step {loop.state.step + 1}  validation mse {mse:.4f}")
    for (x, y), events in loop:
        state, loss = steps.accumulate(state, x, y)
        if "Update" in events:
            state = steps.update(state)
        if "Log" in events:
            print(
                f"step {loop.state.step:4d}  epoch {loop.state.epoch}  "
                f"batch mse {float(loss):.4f}  progress {loop.state.progress:.0%}"
            )
        if LoopEvents.EPOCH_END in events:
            mse = float(steps.mean_squared_error(state, x_val, y_val))
            print(f"epoch {loop.state.epoch} done   validation mse {mse:.4f}")
        if "Checkpoint" in events or LoopEvents.TRAINING_END in events:
            save_checkpoint(directory, model, state, loop)
            checkpoints += 1
    print(
        f"done after step {loop.state.step} in {loop.state.elapsed:.1f} s; "
        f"{checkpoints} checkpoint(s) in {directory}"
    )


if __name__ == "__main__":
    main()
