"""Rule 28 over torch.distributed: two gloo processes with unequal shards (10 and 7
batches per epoch) and an all_reduce in every step finish with identical traces.

Each test starts two processes on 127.0.0.1 (a free port) and fails, instead of hanging,
if they have not both finished within a time limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_torch_distributed import free_port

WORKER = Path(__file__).with_name("_torch_uneven_worker.py")
TIME_LIMIT = 120.0

pytestmark = pytest.mark.slow


def run_two_ranks(scenario: str, tmp_path: Path) -> list[dict[str, Any]]:
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
            if process.returncode != 0:
                errors.append(stderr)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the ranks did not finish within {TIME_LIMIT} s (a hang)")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert not errors, "\n".join(errors)
    return [json.loads((tmp_path / f"{rank}").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("scenario", ["map", "iterable"])
def test_unequal_shards_end_every_epoch_where_the_shorter_one_ends(
    scenario: str, tmp_path: Path
) -> None:
    ranks = run_two_ranks(scenario, tmp_path)
    assert ranks[0]["steps"] == ranks[1]["steps"]
    epoch_ends = [step for step, _, events in ranks[0]["steps"] if "EPOCH_END" in events]
    assert epoch_ends == [6, 13, 20]
    assert "TRAINING_END" in ranks[0]["steps"][-1][2]
    for rank in (0, 1):
        firsts = [batch[0] for batch in ranks[rank]["batches"]]
        assert firsts == [rank * 1000 + 2 * index for index in range(7)] * 3
    # Both ranks summed the same pairs of batches, step by step.
    assert ranks[0]["sums"] == ranks[1]["sums"]
    unused = [m for m in ranks[0]["warnings"] if "leaves" in m]
    assert len(unused) == 3
    assert ranks[1]["warnings"] == []
    if scenario == "map":
        assert all("leaves 3 batches" in message for message in unused)
        assert ranks[0]["epoch_length"] == ranks[1]["epoch_length"] == 7


def test_longest_pads_the_shorter_shard_and_counts_every_sample_once(tmp_path: Path) -> None:
    ranks = run_two_ranks("map-longest", tmp_path)

    def plain(steps: list[Any]) -> list[Any]:
        return [
            [step, epoch, [e for e in events if e != "PADDING"]] for step, epoch, events in steps
        ]

    assert plain(ranks[0]["steps"]) == plain(ranks[1]["steps"])
    assert len(ranks[0]["steps"]) == 30
    padding = [step for step, _, events in ranks[1]["steps"] if "PADDING" in events]
    assert len(padding) == 9  # three padding steps in each of the three epochs
    assert ranks[1]["batches"].count(None) == 9
    first_epoch = [b for rank in (0, 1) for b in ranks[rank]["batches"][:10] if b is not None]
    samples = sorted(sample for batch in first_epoch for sample in batch)
    assert samples == sorted([*range(20), *range(1000, 1014)])


@pytest.mark.parametrize("scenario", ["map-resume", "map-resume-own"])
def test_a_state_dict_resumes_both_ranks_consistently_from_any_rank(
    scenario: str, tmp_path: Path
) -> None:
    """The position is the same on every rank, and the order here depends on nothing per
    rank (no shuffle): rank 0's state dict resumes rank 1 exactly, with no warning, as
    each rank's own does (test_torch_process_state.py has the warning for a shuffle)."""
    ranks = run_two_ranks(scenario, tmp_path)
    for report in ranks:
        assert report["first"]["steps"] + report["rest"]["steps"] == report["full"]["steps"]
        assert report["first"]["batches"] + report["rest"]["batches"] == report["full"]["batches"]
    assert ranks[0]["rest"]["steps"] == ranks[1]["rest"]["steps"]
    assert all("process" not in (report["first"]["state"]["data"] or {}) for report in ranks)
    loaded = [[m for m in report["warnings"] if "loads a state dict" in m] for report in ranks]
    assert loaded == [[], []]
