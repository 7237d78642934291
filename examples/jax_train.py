"""dloop with JAX: a small MLP regression in pure jax.numpy, trained with jax.grad.

Run from a checkout (after `pip install -e "packages/dloop-core[jax]" -e packages/dloop-jax`):

    python examples/jax_train.py

The batches are numpy arrays on the host; `prefetch_to_device` puts them on the devices
two batches ahead (split across all local devices when the batch divides evenly). The loop
is the README's: gradient accumulation every 4 steps, a log line every 100 steps, a
learning-rate decay at step 600, a checkpoint every 0.1 seconds of training time (and at
the end), and a validation pass at the end of every epoch. On a CPU it takes seconds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dloop import Event, Loop, LoopEvents
from dloop_jax import prefetch_to_device

Params = dict[str, jax.Array]
Batch = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]

BATCH_SIZE = 64
ACCUMULATE = 4
EPOCHS = 5


def make_batches(count: int, seed: int) -> list[Batch]:
    """Noisy samples of y = sin(2*x0) - x1*x2 + 0.5*x3, as float32 numpy batches."""
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
        "w1": jax.random.normal(k1, (4, 64)) * 0.5,
        "b1": jnp.zeros(64),
        "w2": jax.random.normal(k2, (64, 1)) * 0.1,
        "b2": jnp.zeros(1),
    }


def mean_squared_error(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


@jax.jit
def accumulate(
    params: Params, summed: Params, x: jax.Array, y: jax.Array
) -> tuple[Params, jax.Array]:
    """Add this batch's gradient to ``summed``; also return the batch's loss."""
    loss, grads = jax.value_and_grad(mean_squared_error)(params, x, y)
    total: Params = jax.tree.map(jnp.add, summed, grads)
    return total, loss


@jax.jit
def sgd_update(params: Params, summed: Params, learning_rate: jax.Array) -> Params:
    updated: Params = jax.tree.map(lambda p, g: p - learning_rate * g / ACCUMULATE, params, summed)
    return updated


def validation_mse(params: Params, batches: list[Batch]) -> float:
    losses = [float(mean_squared_error(params, jnp.asarray(x), jnp.asarray(y))) for x, y in batches]
    return sum(losses) / len(losses)


def data_parallel_sharding() -> NamedSharding | None:
    """Split batches across every local device, when the batch size allows it."""
    devices = jax.local_devices()
    if len(devices) == 1 or BATCH_SIZE % len(devices):
        return None
    batch_axis = PartitionSpec("data")  # type: ignore[no-untyped-call, unused-ignore]
    return NamedSharding(Mesh(np.array(devices), ("data",)), batch_axis)


def main() -> None:
    train = make_batches(count=160, seed=0)
    validation = make_batches(count=16, seed=1)
    params = init_params(seed=0)
    summed = jax.tree.map(jnp.zeros_like, params)
    learning_rate = 0.2
    checkpoint = Path(tempfile.mkdtemp(prefix="dloop-jax-")) / "checkpoint.json"
    checkpoints = 0

    sharding = data_parallel_sharding()
    loop = Loop(
        prefetch_to_device(train, size=2, sharding=sharding),
        max_epochs=EPOCHS,
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=100),
            "DecayLR": Event(at_step=600),
            "Checkpoint": Event(every_n_seconds=0.1),
        },
    )
    where = f"{len(jax.local_devices())} {jax.default_backend()} device(s)"
    layout = "batches split across them" if sharding else "batches on one device"
    print(f"training for {len(loop)} steps on {where}, {layout}")
    print(f"epoch 0 start  validation mse {validation_mse(params, validation):.4f}")
    for (x, y), events in loop:
        summed, loss = accumulate(params, summed, x, y)
        if "Update" in events:
            params = sgd_update(params, summed, jnp.float32(learning_rate))
            summed = jax.tree.map(jnp.zeros_like, summed)
        if "DecayLR" in events:
            learning_rate /= 10
            print(f"step {loop.state.step:4d}  learning rate decayed to {learning_rate:g}")
        if "Log" in events:
            state = loop.state
            print(
                f"step {state.step:4d}  epoch {state.epoch}  batch mse {float(loss):.4f}  "
                f"progress {state.progress:.0%}"
            )
        if LoopEvents.EPOCH_END in events:
            print(
                f"epoch {loop.state.epoch} done   "
                f"validation mse {validation_mse(params, validation):.4f}"
            )
        if "Checkpoint" in events or LoopEvents.TRAINING_END in events:
            saved = {
                "params": {name: np.asarray(value).tolist() for name, value in params.items()},
                "loop": loop.state_dict(),
            }
            checkpoint.write_text(json.dumps(saved))
            checkpoints += 1
    print(f"done in {loop.state.elapsed:.1f} s; {checkpoints} checkpoint(s) in {checkpoint}")


if __name__ == "__main__":
    main()
