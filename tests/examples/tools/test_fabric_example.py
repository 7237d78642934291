"""examples/fabric_train.py trains on the CPU with one process and with two (Fabric starts
the second), and a run stopped and resumed from its ``fabric.save`` checkpoint ends as
the uninterrupted run does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fabric_train.py"

pytestmark = pytest.mark.slow

# Runs the example with a fabric.save that writes the first bytes of its file and then
# dies, as a job killed (preempted, out of memory) in the middle of a save would.
KILLED_WHILE_SAVING = """
import os, runpy, sys
from lightning_fabric import Fabric

def save(self, path, state, filter=None):
    with open(path, "wb") as file:
        file.write(b"the first bytes of a checkpoint")
    os._exit(9)

Fabric.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(*arguments: str, patch: str | None = None, returncode: int = 0) -> str:
    """Run the example (under ``python -c patch``, when given); return its standard output,
    failing unless it exits with ``returncode``."""
    result = subprocess.run(
        [sys.executable, *(("-c", patch) if patch else ()), str(EXAMPLE), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == returncode, result.stdout + result.stderr
    return result.stdout


def validation(output: str) -> tuple[float, float]:
    found = re.search(r"validation mse ([\d.]+) -> ([\d.]+)$", output.strip())
    assert found is not None, output
    return float(found[1]), float(found[2])


@pytest.mark.parametrize("devices", [1, 2])
def test_the_fabric_example_trains_and_its_validation_error_falls(devices: int) -> None:
    output = run("--devices", str(devices))

    before, after = validation(output)
    assert after < before / 5
    assert len(re.findall(r"epoch \d done", output)) == 4
    steps = 4 * 4096 // (32 * devices)
    assert f"{devices} process(es): {steps} steps to go" in output


@pytest.mark.parametrize(
    ("stop_after", "stopped_at"),
    [
        pytest.param(199, 199, id="an-update-step"),
        # Not an update step (every 4th): the run goes on to the next one, 203, and
        # saves there, with no gradient half accumulated.
        pytest.param(201, 203, id="between-updates"),
    ],
)
def test_the_fabric_example_resumed_from_its_checkpoint_ends_as_one_run(
    tmp_path: Path, stop_after: int, stopped_at: int
) -> None:
    checkpoint = tmp_path / "run.ckpt"
    uninterrupted = run()

    first = run("--checkpoint", str(checkpoint), "--stop-after-steps", str(stop_after))
    assert checkpoint.exists()
    resumed = run("--checkpoint", str(checkpoint))

    assert f"checkpoint saved after step {stopped_at}" in first
    assert f"stopping after step {stopped_at}" in first
    assert f"resumed from {checkpoint} after step {stopped_at}" in resumed
    assert f"{4 * 4096 // 32 - stopped_at - 1} steps to go" in resumed
    assert re.findall(r"epoch \d done.*", first + resumed) == re.findall(
        r"epoch \d done.*", uninterrupted
    )
    assert validation(resumed)[1] == validation(uninterrupted)[1]


def test_a_run_killed_while_saving_resumes_from_the_checkpoint_before(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.ckpt"
    uninterrupted = run()
    first = run("--checkpoint", str(checkpoint), "--stop-after-steps", "199")
    run("--checkpoint", str(checkpoint), patch=KILLED_WHILE_SAVING, returncode=9)  # died saving
    resumed = run("--checkpoint", str(checkpoint))

    assert f"resumed from {checkpoint} after step 199" in resumed
    assert re.findall(r"epoch \d done.*", first + resumed) == re.findall(
        r"epoch \d done.*", uninterrupted
    )
    assert validation(resumed)[1] == validation(uninterrupted)[1]
