"""examples/torch_uneven.py: two processes over unequal shards train with DDP without a
hang, validate over every sample exactly once, and resume, each process from its own
state dict, as one uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "torch_uneven.py"


def run(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result


def final_mse(output: str) -> str:
    found = re.search(r"validation mse [\d.]+ -> ([\d.]+)$", output.strip())
    assert found is not None, output
    return found[1]


@pytest.mark.slow
def test_the_uneven_example_trains_on_two_processes_and_counts_every_sample_once() -> None:
    result = run("--epochs", "2")
    epochs = re.findall(
        r"epoch (\d): (\d+) steps on every rank, .* over (\d+) samples", result.stdout
    )
    # 400 samples in batches of 16 on the shorter rank: 25 steps per epoch on both.
    assert epochs == [("0", "25", "227"), ("1", "25", "227")]
    found = re.search(r"validation mse ([\d.]+) -> ([\d.]+)$", result.stdout.strip())
    assert found is not None, result.stdout
    assert float(found[2]) < float(found[1]) / 10
    assert result.stderr.count("leaves 8 batches of epoch") == 2  # rank 0, each epoch


@pytest.mark.slow
def test_the_uneven_example_resumes_each_process_from_its_own_state_dict(tmp_path: Path) -> None:
    """Each rank shuffles with its own generator: resumed from rank 0's state dict, rank
    1 would take rank 0's order (and warn); from its own, the run ends as one run."""
    one_run = run("--epochs", "2")
    checkpoint = str(tmp_path / "run.pt")

    first = run("--epochs", "1", "--checkpoint", checkpoint)
    states = [json.loads((tmp_path / f"run-rank{r}.json").read_text()) for r in (0, 1)]
    second = run("--epochs", "2", "--checkpoint", checkpoint)

    assert f"checkpoint saved to {checkpoint} after step 24" in first.stdout
    assert [state["data"]["process"]["rank"] for state in states] == [0, 1]
    assert states[0]["data"]["order"] != states[1]["data"]["order"]
    assert f"resumed from {checkpoint} after step 24" in second.stdout
    assert re.findall(r"epoch (\d): 25 steps on every rank", second.stdout) == ["1"]
    assert "loads a state dict saved by rank" not in second.stderr
    assert final_mse(second.stdout) == final_mse(one_run.stdout)

    def epoch_1(output: str) -> list[str]:
        return [line for line in output.splitlines() if line.startswith(("step 39", "epoch 1"))]

    assert len(epoch_1(one_run.stdout)) == 2
    assert epoch_1(second.stdout) == epoch_1(one_run.stdout)
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file
