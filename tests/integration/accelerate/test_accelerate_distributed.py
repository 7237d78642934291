"""Two CPU processes (gloo, started by torchrun) under Accelerate, agreed through
``dloop_torch.DistributedSync``: the same steps and events on both, the right shard on
each, the right ``len(loop)``, and exact resume through ``save_state`` / ``load_state``.

The ranks' clocks run at different rates and a stop is requested on one rank only, so
that without the agreement they would take other steps or fire other events.

One torchrun job runs every scenario (``_accelerate_worker.py``); the job fails, instead
of hanging, if it has not finished within a time limit, and then the whole process group
(torchrun, both ranks and any DataLoader workers) is killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _accelerate_worker import (
    ACCUMULATE,
    AGREEMENT,
    BATCH_SIZE,
    CUTS,
    EPOCHS,
    SAMPLES,
    STOP_AFTER,
    reference_epochs,
)

WORKER = Path(__file__).with_name("_accelerate_worker.py")
TIME_LIMIT = 120.0
RANKS = (0, 1)
PER_RANK = SAMPLES // BATCH_SIZE // len(RANKS)
SAMPLERS = ["default", "seedable"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of the two ranks wrote."""
    output = tmp_path_factory.mktemp("accelerate-two-ranks")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={len(RANKS)}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        str(WORKER),
        str(output),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # A session of its own: on a timeout, killing its process group ends torchrun, both
    # ranks and their DataLoader workers, leaving no orphan behind.
    job = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
    )
    try:
        _, stderr = job.communicate(timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        pytest.fail(f"the two ranks did not finish within {TIME_LIMIT} s: they hung")
    assert job.returncode == 0, stderr
    return [json.loads((output / f"rank{rank}.json").read_text()) for rank in RANKS]


def without_batches(rows: list[list[Any]]) -> list[list[Any]]:
    """[step, epoch, events] of every row."""
    return [[step, epoch, events] for step, epoch, _, events in rows]


@pytest.mark.slow
def test_both_ranks_run_two_processes(ranks: list[dict[str, Any]]) -> None:
    assert [rank["world_size"] for rank in ranks] == [2, 2]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_ranks_agree_on_every_step_and_event(ranks: list[dict[str, Any]], sampler: str) -> None:
    rank0, rank1 = (rank[sampler]["uninterrupted"] for rank in ranks)

    assert without_batches(rank0) == without_batches(rank1)
    assert [row[0] for row in rank0] == list(range(EPOCHS * PER_RANK))
    events = {event for row in rank0 for event in row[3]}
    assert {"Update", "Log", "Checkpoint", "LoopEvents.EPOCH_END"} <= events


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_rank_gets_its_shard_of_every_epoch(ranks: list[dict[str, Any]], sampler: str) -> None:
    expected = reference_epochs(seedable=sampler == "seedable")
    for index, rank in enumerate(ranks):
        rows = rank[sampler]["uninterrupted"]
        by_epoch = [[row[2] for row in rows if row[1] == epoch] for epoch in range(EPOCHS)]
        # BatchSamplerShard: batch i of the epoch goes to rank i % 2.
        assert by_epoch == [epoch[index :: len(RANKS)] for epoch in expected]
    assert len({str(epoch) for epoch in expected}) == EPOCHS


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_rank_counts_its_own_batches(ranks: list[dict[str, Any]], sampler: str) -> None:
    assert [rank[sampler]["length"] for rank in ranks] == [EPOCHS * PER_RANK] * len(RANKS)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("cut", CUTS)
def test_two_ranks_resumed_from_save_state_continue_the_uninterrupted_run(
    ranks: list[dict[str, Any]], sampler: str, cut: int
) -> None:
    for rank in ranks:
        assert rank[sampler]["resumed"][str(cut)] == rank[sampler]["uninterrupted"]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_two_ranks_resumed_without_the_loop_registered_start_over(
    ranks: list[dict[str, Any]], sampler: str
) -> None:
    for rank in ranks:
        pieced, whole = rank[sampler]["unregistered"], rank[sampler]["uninterrupted"]
        assert pieced != whole
        assert pieced[CUTS[0] + 1][0] == 0


@pytest.mark.slow
@pytest.mark.parametrize("scenario", AGREEMENT)
def test_ranks_that_would_decide_differently_take_the_same_steps_and_events(
    ranks: list[dict[str, Any]], scenario: str
) -> None:
    """Rank 1's clock runs twice as fast as rank 0's ("clocks": its ``Timed`` deadlines
    and ``max_seconds`` come first), or rank 1 alone requests a stop ("stop"): every
    decision is agreed, on agreement steps, and both ranks stop on the same step."""
    rank0, rank1 = (without_batches(rank["agreement"][scenario]) for rank in ranks)

    assert rank0 == rank1
    steps = [step for step, _, _ in rank0]
    assert steps == list(range(len(steps)))
    assert len(steps) < PER_RANK  # a time or stop decision ended the one epoch early
    last = rank0[-1]
    assert "LoopEvents.TRAINING_END" in last[2]
    assert (last[0] + 1) % ACCUMULATE == 0  # on an agreement step
    timed = [step for step, _, events in rank0 if "Timed" in events]
    assert timed
    assert all((step + 1) % ACCUMULATE == 0 for step in timed)
    if scenario == "stop":
        assert "LoopEvents.INTERRUPTED" in last[2]
        assert last[0] == STOP_AFTER + 2  # the first agreement step after the request
    else:
        # Rank 1's deadlines rule: its 1 s comes at step 2, agreed on step 3 (rank 0's
        # would be step 4, agreed on 7).
        assert timed[0] == ACCUMULATE - 1
