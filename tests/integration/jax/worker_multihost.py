"""One process of a two-process JAX job, run by test_jax_multihost.py.

Each process joins the job with ``jax.distributed.initialize`` (gloo CPU collectives, two
CPU devices per process), runs loops whose manual clocks diverge, and writes a JSON
report of what it saw.

Usage: python worker_multihost.py PROCESS_ID PORT REPORT_PATH
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dloop import Event, Loop, LoopEvents, Sync
from dloop.testing import ManualClock
from dloop_jax import MultihostSync, prefetch_to_device

NUM_PROCESSES = 2
EVERY_N_STEPS = 4
CLOCK_TICKS = (0.10, 0.13)
"""Seconds per clock reading in process 0 and process 1: their clocks drift apart."""
STOP_STEP = 9
"""Process 1 requests a stop in the body of this step."""
LARGE_FLAGS = (
    (2**40 + 5, 3, 2**62 - 1, 0, 2**31 - 1),
    (2**40 + 7, 2**33, 1, 2**31, 2**31),
)
"""What each process passes to ``combine`` directly: values beyond 32 bits."""
LOCAL_ROWS = 4


Trace = list[tuple[int, list[str]]]


BUILT_IN = {
    LoopEvents.EPOCH_START: "EPOCH_START",
    LoopEvents.EPOCH_END: "EPOCH_END",
    LoopEvents.TRAINING_END: "TRAINING_END",
    LoopEvents.INTERRUPTED: "INTERRUPTED",
}


def names(events: frozenset[Any]) -> list[str]:
    """The events of a step as sorted strings (the built-in ones by their names)."""
    return sorted(BUILT_IN.get(event, str(event)) for event in events)


def traced_run(process_id: int, *, sync: Sync | None) -> Trace:
    """A run with time events and a time budget; the clock ticks differently per process."""
    loop = Loop(
        list(range(10)),
        max_epochs=100,
        max_seconds=6.0,
        clock=ManualClock(tick=CLOCK_TICKS[process_id]),
        sync=sync,
        events={
            "EverySecond": Event(every_n_seconds=1.0),
            "AtTime": Event(at_time=2.5),
            "EveryFiveSteps": Event(every_n_steps=5),
        },
    )
    return [(loop.state.step, names(events)) for _, events in loop]


def stopped_run(process_id: int, *, sync: Sync | None) -> Trace:
    """A long run that process 1 asks to stop in the body of step ``STOP_STEP``."""
    loop = Loop(
        list(range(10)),
        max_steps=1000,
        clock=ManualClock(tick=CLOCK_TICKS[process_id]),
        sync=sync,
    )
    trace = []
    for _, events in loop:
        trace.append((loop.state.step, names(events)))
        if process_id == 1 and loop.state.step == STOP_STEP:
            loop.request_stop()
    return trace


def local_batches(process_id: int) -> list[np.ndarray[Any, Any]]:
    """This process's part of each global batch: ``LOCAL_ROWS`` rows of its own values."""
    return [
        np.arange(LOCAL_ROWS * 3, dtype=np.float32).reshape(LOCAL_ROWS, 3)
        + 1000 * process_id
        + 100 * batch
        for batch in range(3)
    ]


def counting(calls: list[int], function: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return function(*args, **kwargs)

    return counted


class CountingSync(MultihostSync):
    """A ``MultihostSync`` that counts its ``combine`` calls."""

    __slots__ = ("combines",)

    def __init__(self, *, every_n_steps: int) -> None:
        super().__init__(every_n_steps=every_n_steps)
        self.combines = 0

    def combine(self, flags: Sequence[int]) -> tuple[int, ...]:
        self.combines += 1
        return super().combine(flags)


def main(process_id: int, port: int, report_path: str) -> None:
    # Built before jax.distributed.initialize, which fails once a backend is running.
    sync = CountingSync(every_n_steps=EVERY_N_STEPS)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # type: ignore[no-untyped-call, unused-ignore]
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=process_id,
        initialization_timeout=120,
    )
    report: dict[str, Any] = {"process_count": jax.process_count()}

    calls: list[int] = []
    real_allgather = multihost_utils.process_allgather
    multihost_utils.process_allgather = counting(calls, real_allgather)
    report["trace"] = traced_run(process_id, sync=sync)
    report["collectives"] = len(calls)
    report["combines"] = sync.combines
    multihost_utils.process_allgather = real_allgather

    report["stopped"] = stopped_run(process_id, sync=sync)
    # A collective after the loop: it completes only if both processes left it together.
    last_steps = multihost_utils.process_allgather(np.int32(report["stopped"][-1][0]))
    report["last_steps_of_both"] = [int(step) for step in last_steps]

    report["large"] = list(sync.combine(LARGE_FLAGS[process_id]))

    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))  # type: ignore[no-untyped-call, unused-ignore]
    total = jax.jit(jnp.sum)
    batches = []
    loop = Loop(prefetch_to_device(local_batches(process_id), sharding=sharding), max_epochs=1)
    for batch, _ in loop:
        local = local_batches(process_id)[loop.state.epoch_step]
        own_rows = np.concatenate(
            [np.asarray(shard.data) for shard in sorted_shards(batch)], axis=0
        )
        batches.append(
            {
                "global_shape": list(batch.shape),
                "carries_sharding": batch.sharding == sharding,
                "addressable_devices": len(batch.addressable_shards),
                "own_rows_are_local_batch": bool(np.array_equal(own_rows, local)),
                "global_sum": float(total(batch)),
            }
        )
    report["prefetch"] = batches

    with open(report_path, "w") as file:
        json.dump(report, file)


def sorted_shards(array: Any) -> list[Any]:
    """This process's shards of ``array``, in the order of their rows."""
    return sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
