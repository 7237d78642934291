"""``DistributedSync``: two gloo processes whose clocks diverge agree on every decision.

Each test starts two processes on 127.0.0.1 (a free port) and fails, instead of hanging,
if they have not both finished within a time limit.
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
import torch.distributed as dist

from dloop_torch import DistributedSync

WORKER = Path(__file__).with_name("_torch_distributed_worker.py")
TIME_LIMIT = 120.0
EVERY_N_STEPS = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_two_ranks(scenario: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Run the worker as ranks 0 and 1; return what each wrote."""
    port = str(free_port())
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                scenario,
                str(rank),
                "2",
                port,
                str(tmp_path / f"{rank}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for rank in (0, 1)
    ]
    deadline = time.monotonic() + TIME_LIMIT
    errors = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            errors.append(stderr)
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        for process in processes:
            process.communicate()
        pytest.fail(f"the two ranks did not finish within {TIME_LIMIT} s: they hung")
    for rank, process in enumerate(processes):
        assert process.returncode == 0, f"rank {rank} failed:\n{errors[rank]}"
    return [json.loads((tmp_path / f"{rank}").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_ranks_whose_clocks_diverge_fire_the_same_events_on_the_same_steps(
    tmp_path: Path,
) -> None:
    rank0, rank1 = run_two_ranks("events", tmp_path)

    assert rank0["agreed"] == rank1["agreed"]
    # Alone, the ranks disagree: the test would catch a sync that does nothing.
    assert rank0["alone"] != rank1["alone"]
    fired = {name for _, names in rank0["agreed"] for name in names}
    assert {"tick", "once", "every_7", "LoopEvents.TRAINING_END"} <= fired
    last_step, last_events = rank0["agreed"][-1]
    assert "LoopEvents.TRAINING_END" in last_events
    # max_seconds ends the run on an agreement step.
    assert (last_step + 1) % EVERY_N_STEPS == 0
    # The time decisions follow the slower clock: rank 1 alone ends its run much earlier.
    assert last_step <= rank1["alone"][-1][0] + EVERY_N_STEPS < rank0["alone"][-1][0]


@pytest.mark.slow
def test_a_stop_requested_on_one_rank_stops_both_on_the_same_step(tmp_path: Path) -> None:
    rank0, rank1 = run_two_ranks("stop", tmp_path)

    assert rank0["agreed"] == rank1["agreed"]
    # Requested by rank 1 in step 9's body: the next agreement step, 11, is the last.
    last_step, last_events = rank0["agreed"][-1]
    assert last_step == 11
    assert "LoopEvents.INTERRUPTED" in last_events
    assert "LoopEvents.TRAINING_END" in last_events


@pytest.mark.slow
def test_each_agreement_is_one_all_reduce_max_of_one_cpu_int64_tensor_with_gloo(
    tmp_path: Path,
) -> None:
    rank0, rank1 = run_two_ranks("stop", tmp_path)

    # Steps 0..11 hold agreement steps 3, 7 and 11 (and the core may agree once more
    # on where the data ends): one all-reduce of one flat int64 CPU tensor each.
    assert rank0["reductions"] == rank1["reductions"]
    assert len(rank0["reductions"]) == rank0["combines"] >= 3
    (shape,) = {tuple(reduction["shape"]) for reduction in rank0["reductions"]}
    assert len(shape) == 1
    assert all(r["device"] == "cpu" and r["max"] for r in rank0["reductions"])


def test_distributed_sync_needs_an_initialised_process_group() -> None:
    assert not dist.is_initialized()

    with pytest.raises(RuntimeError, match=r"call torch\.distributed\.init_process_group"):
        DistributedSync(every_n_steps=4)


@pytest.mark.parametrize(
    ("every_n_steps", "error"),
    [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)],
)
def test_distributed_sync_rejects_a_bad_every_n_steps(every_n_steps: object, error: type) -> None:
    with pytest.raises(error, match=f"every_n_steps must be an int >= 1.*, got {every_n_steps!r}"):
        DistributedSync(every_n_steps=every_n_steps)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_sync_over_a_group_without_this_process_is_refused_at_construction(
    tmp_path: Path,
) -> None:
    inside, outside = run_two_ranks("outside-group", tmp_path)

    assert inside == {"combined": [3]}
    assert outside["error"].startswith("group=")
    assert "does not contain this process (global rank 1)" in outside["error"]


def test_the_non_member_group_object_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1 if group is None else -1)

    with pytest.raises(ValueError, match=r"does not contain this process \(global rank 1\)"):
        DistributedSync(every_n_steps=2, group=dist.GroupMember.NON_GROUP_MEMBER)  # type: ignore[arg-type]
