"""Rule 17 under real crashes: a run killed with SIGKILL at random steps and resumed from
its last checkpoint, again and again, yields the trace of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _core_crash_worker import (
    KINDS,
    LAST_STEP,
    PHASES,
    Entry,
    uninterrupted_trace,
)

WORKER = Path(__file__).with_name("_core_crash_worker.py")
KILLS_PER_KIND = 8


def read_trace(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def checkpoint_step(directory: Path) -> int:
    """The last step done according to the checkpoint on disk (-1 without one)."""
    path = directory / "checkpoint.json"
    return int(json.loads(path.read_text())["step"]) if path.exists() else -1


@pytest.mark.slow
def test_a_run_killed_at_random_steps_and_resumed_yields_the_uninterrupted_trace(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("DLOOP_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    kills = 0
    for kind in KINDS:
        expected = uninterrupted_trace(kind)
        assert len(expected) == LAST_STEP + 1
        directory = tmp_path / kind
        directory.mkdir()
        reconstructed: list[Entry] = []
        run = 0
        while True:
            start = checkpoint_step(directory)
            context = f"seed={seed} kind={kind} run={run} resumed after step {start}"
            killing = run < KILLS_PER_KIND
            kill_at = rng.randint(start + 1, min(start + 9, LAST_STEP)) if killing else -1
            phase = rng.choice(PHASES)
            result = subprocess.run(
                [sys.executable, str(WORKER), str(directory), kind, str(run), str(kill_at), phase],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            segment = read_trace(directory / f"trace-{run}.jsonl")
            if killing:
                assert result.returncode == -signal.SIGKILL, f"{context}: {result.stderr}"
                kills += 1
            else:
                assert result.returncode == 0, f"{context}: {result.stderr}"
            # The resumed run starts right after its checkpoint and agrees with the
            # uninterrupted run for as long as it lived.
            assert segment == expected[start + 1 : start + 1 + len(segment)], context
            reconstructed = reconstructed[: start + 1] + segment
            run += 1
            if not killing:
                break
        assert reconstructed == expected, f"seed={seed} kind={kind}"
    assert kills >= 20
