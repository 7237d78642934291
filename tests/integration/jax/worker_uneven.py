"""One process of the two-process uneven-data tests in test_jax_uneven.py.

Process 0 has 10 host batches per epoch, process 1 has 7; both run ``Loop`` over
``dloop_jax.prefetch_to_device`` with ``MultihostSync`` and make a cross-process
collective (``process_allgather``) in every step, which hangs unless both run the same
steps. Writes a JSON report of what it saw.

Usage: python worker_uneven.py UNEVEN PROCESS_ID PORT REPORT_PATH
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from dloop import Loop, LoopEvents, LoopWarning
from dloop_jax import MultihostSync, prefetch_to_device

NUM_PROCESSES = 2
BATCHES = (10, 7)
EVERY_N_STEPS = 3
NAMES: dict[object, str] = {event: event.name for event in LoopEvents}


def host_batches(process_id: int) -> list[np.ndarray[Any, Any]]:
    """This process's batches: two rows of values ``1000 * process + 2 * index + row``."""
    return [
        np.array([1000 * process_id + 2 * index, 1000 * process_id + 2 * index + 1], np.float32)
        for index in range(BATCHES[process_id])
    ]


def main(uneven: str, process_id: int, port: int, report_path: str) -> None:
    sync = MultihostSync(every_n_steps=EVERY_N_STEPS)  # before jax.distributed.initialize
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # type: ignore[no-untyped-call, unused-ignore]
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=process_id,
        initialization_timeout=120,
    )
    loop = Loop(
        prefetch_to_device(host_batches(process_id)),
        max_epochs=2,
        sync=sync,
        uneven=uneven,
    )
    steps, batches, gathered = [], [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LoopWarning)
        for batch, events in loop:
            local = np.zeros(2, np.float32) if batch is None else np.asarray(batch)
            both = multihost_utils.process_allgather(local)  # every step, on every process
            steps.append([loop.state.step, loop.state.epoch, sorted(NAMES[e] for e in events)])
            batches.append(None if batch is None else local.tolist())
            gathered.append(np.asarray(both).tolist())
    report = {
        "steps": steps,
        "batches": batches,
        "gathered": gathered,
        "warnings": [str(warning.message) for warning in caught],
    }
    with open(report_path, "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
