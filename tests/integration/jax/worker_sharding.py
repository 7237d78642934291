"""Run by test_jax_sharding.py with several CPU devices: prefetch batches with a
NamedSharding and report how the arrays are laid out.

Usage: python worker_sharding.py REPORT_PATH
"""

from __future__ import annotations

import json
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dloop import Loop, LoopEvents
from dloop_jax import prefetch_to_device

BATCH_SIZE = 8


def host_batches(count: int) -> list[dict[str, np.ndarray[Any, Any]]]:
    rng = np.random.default_rng(0)
    return [
        {
            "x": rng.normal(size=(BATCH_SIZE, 3)).astype(np.float32),
            "y": np.arange(BATCH_SIZE, dtype=np.int32) + 100 * i,
        }
        for i in range(count)
    ]


@jax.jit
def step(batch: dict[str, jax.Array]) -> jax.Array:
    return jnp.sum(batch["x"] * batch["y"][:, None])


def layout(mesh_shape: tuple[int, ...], axis_names: tuple[str, ...]) -> dict[str, Any]:
    """Prefetch over a mesh of that shape with the batch axis split over "data"."""
    mesh = Mesh(np.array(jax.devices()).reshape(mesh_shape), axis_names)
    sharding = NamedSharding(mesh, PartitionSpec("data"))  # type: ignore[no-untyped-call, unused-ignore]
    batches = host_batches(3)
    steps = []
    loop = Loop(prefetch_to_device(batches, sharding=sharding), max_epochs=2)
    for batch, events in loop:
        host = batches[loop.state.epoch_step]
        leaves = jax.tree.leaves(batch)
        steps.append(
            {
                "carries_sharding": [leaf.sharding == sharding for leaf in leaves],
                "devices": [len(leaf.devices()) for leaf in leaves],
                "shard_shapes": [
                    sorted({shard.data.shape for shard in leaf.addressable_shards})
                    for leaf in leaves
                ],
                "equal_to_host": all(
                    np.array_equal(np.asarray(got), expected)
                    for got, expected in zip(leaves, jax.tree.leaves(host), strict=True)
                ),
                "step_result": float(step(batch)),
                "host_result": float(np.sum(host["x"] * host["y"][:, None])),
                "epoch_end": LoopEvents.EPOCH_END in events,
            }
        )
    return {"mesh_shape": list(mesh.devices.shape), "steps": steps}


def main(report_path: str) -> None:
    report = {
        "device_count": jax.device_count(),
        "one_axis": layout((4,), ("data",)),
        "two_axes": layout((2, 2), ("data", "model")),
    }
    with open(report_path, "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(sys.argv[1])
