"""Two Fabric DDP processes on CPU (gloo) agree through ``dloop_torch.DistributedSync``:
the same steps and events on both, each on its own shard of every epoch, and a run
checkpointed with ``fabric.save`` (process 0 writes it) and resumed with ``fabric.load``
takes the uninterrupted run's steps on both processes. Processes whose clocks run at
different rates, or of which one alone requests a stop, still take the same steps with the
same events.

Each test starts two processes on 127.0.0.1 (a free port) and fails, instead of hanging,
when they have not both finished within a time limit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _fabric_runs import AGREEMENT, BATCH_SIZE, EPOCHS, SAMPLES, STOP_AFTER, UPDATE_EVERY

WORKER = Path(__file__).with_name("_fabric_worker.py")
TIME_LIMIT = 180.0
STEPS = EPOCHS * SAMPLES // (2 * BATCH_SIZE)
"""Steps of each process: every epoch, each has half of the samples."""

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_two_processes(arguments: list[str], tmp_path: Path) -> list[dict[str, Any]]:
    """Run the worker with ``arguments`` and an output path as processes 0 and 1; return
    what each wrote."""
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": "2",
        "NODE_RANK": "0",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *arguments, str(tmp_path / f"{rank}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**environment, "LOCAL_RANK": str(rank)},
            cwd=WORKER.parent,
        )
        for rank in (0, 1)
    ]
    deadline = time.monotonic() + TIME_LIMIT
    errors = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if process.returncode != 0:
                errors.append(stderr)
    finally:
        for process in processes:
            process.kill()
    assert not errors, "\n".join(errors)
    return [json.loads((tmp_path / f"{rank}").read_text()) for rank in (0, 1)]


# Cuts after an update (so no half-accumulated gradients are lost): mid-epoch, epoch end.
@pytest.mark.parametrize(("sampler", "cut"), [("random", 9), ("distributed", 5)])
def test_two_fabric_processes_agree_and_resume_exactly(
    tmp_path: Path, sampler: str, cut: int
) -> None:
    reports = run_two_processes([sampler, str(cut), str(tmp_path / "run.ckpt")], tmp_path)

    for report in reports:
        full = report["full"]
        assert report["full_length"] == len(full) == STEPS
        assert report["first"] + report["rest"] == full
        assert report["rest_length"] == STEPS - cut - 1
        assert report["rest_weights"] == pytest.approx(report["full_weights"], abs=1e-6)
        assert report["without_loop"] != report["rest"]  # the loop's state is what resumes
    zero, one = (report["full"] for report in reports)
    assert [events for _, events in zero] == [events for _, events in one]
    steps_per_epoch = STEPS // EPOCHS
    orders = []
    for epoch in range(EPOCHS):
        shard = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        ids = [[i for batch, _ in steps[shard] for i in batch] for steps in (zero, one)]
        assert sorted(ids[0] + ids[1]) == list(range(SAMPLES))  # disjoint shards, all samples
        orders.append(ids[0])
    assert len({tuple(order) for order in orders}) == EPOCHS  # set_epoch reached the sampler
    update_steps = [i for i, (_, events) in enumerate(zero) if "Update" in events]
    assert update_steps == list(range(UPDATE_EVERY - 1, STEPS, UPDATE_EVERY))


def test_two_fabric_processes_that_would_decide_differently_take_the_same_steps(
    tmp_path: Path,
) -> None:
    """Process 1's clock runs twice as fast as process 0's ("clocks": its ``Timed``
    deadlines and ``max_seconds`` come first), or process 1 alone requests a stop
    ("stop"): every decision is agreed, on agreement steps, and both stop together."""
    reports = run_two_processes(["agreement"], tmp_path)

    assert [report["rank"] for report in reports] == [0, 1]
    for kind in AGREEMENT:
        zero, one = (report[kind] for report in reports)
        assert zero == one, kind
        assert [step for step, _ in zero] == list(range(len(zero)))
        assert len(zero) < STEPS  # a time or stop decision ended the run early
        last_step, last_events = zero[-1]
        assert "LoopEvents.TRAINING_END" in last_events
        assert (last_step + 1) % UPDATE_EVERY == 0  # on an agreement step
        timed = [step for step, events in zero if "Timed" in events]
        # Process 1's first deadline (1 s) comes at step 2, agreed on step 3; process 0's
        # would come at step 4.
        assert timed[0] == 3
        assert all((step + 1) % UPDATE_EVERY == 0 for step in timed)
        if kind == "stop":
            assert "LoopEvents.INTERRUPTED" in last_events
            assert last_step == STOP_AFTER + 1  # the first agreement step after the request
        else:
            assert last_step == 5  # process 1's budget: 2.5 s + a 0.5 s step reach 3 s
