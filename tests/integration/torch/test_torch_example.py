"""examples/torch_train.py runs on the CPU, resumes from its checkpoint, and runs under
``torchrun --nproc-per-node 2`` (gloo), where every process resumes from its own loop
state dict."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "torch_train.py"
TIME_LIMIT = 300


def run(command: list[str], cwd: Path, *, warnings: str = "") -> str:
    """Run ``command`` (with ``PYTHONWARNINGS=warnings`` when given); return its
    standard output, failing the test on an error."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    if warnings:
        environment["PYTHONWARNINGS"] = f"{warnings}::UserWarning"
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
        check=False,
        cwd=cwd,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def validation_errors(output: str) -> tuple[float, float]:
    """The validation mse before and after training, from the last line."""
    found = re.search(r"validation mse ([\d.]+) -> ([\d.]+)$", output.strip())
    assert found is not None, output
    return float(found[1]), float(found[2])


@pytest.mark.slow
def test_the_torch_example_trains_on_the_cpu(tmp_path: Path) -> None:
    output = run([sys.executable, str(EXAMPLE)], cwd=tmp_path)

    assert "training on cpu, 1 process(es): 256 steps to go, 4 epochs x 64 batches" in output
    epochs = re.findall(r"^epoch (\d) done  validation mse", output, re.MULTILINE)
    assert epochs == ["0", "1", "2", "3"]
    assert re.search(r"^step   96  learning rate decayed to 0\.005$", output, re.MULTILINE)
    logged = re.findall(r"^step +(\d+) +epoch \d +loss", output, re.MULTILINE)
    assert {"63", "127", "191", "255"} <= set(logged)
    before, after = validation_errors(output)
    assert after < 0.05 * before


@pytest.mark.slow
def test_the_torch_example_resumed_from_its_checkpoint_ends_like_one_run(
    tmp_path: Path,
) -> None:
    checkpoint = str(tmp_path / "run.pt")
    one_run = run([sys.executable, str(EXAMPLE), "--epochs", "3"], cwd=tmp_path)

    first = run(
        [sys.executable, str(EXAMPLE), "--epochs", "1", "--checkpoint", checkpoint], tmp_path
    )
    second = run(
        [sys.executable, str(EXAMPLE), "--epochs", "3", "--checkpoint", checkpoint], tmp_path
    )

    assert f"checkpoint saved to {checkpoint} after step 63" in first
    assert f"resumed from {checkpoint} after step 63" in second
    assert "128 steps to go" in second
    assert validation_errors(second)[1] == validation_errors(one_run)[1]
    # The loop's state dict is a JSON file of this (only) process's own.
    assert json.loads((tmp_path / "run-rank0.json").read_text())["step"] == 191
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file


def torchrun() -> list[str]:
    launcher = Path(sys.executable).with_name("torchrun")
    return [str(launcher)] if launcher.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_the_torch_example_runs_under_torchrun_with_two_processes(tmp_path: Path) -> None:
    output = run([*torchrun(), "--standalone", "--nproc-per-node", "2", str(EXAMPLE)], tmp_path)

    # Each process trains on its half of the data: 32 batches per epoch.
    assert "training on cpu, 2 process(es) (gloo): 128 steps to go, 4 epochs x 32 batches" in output
    # Only rank 0 prints.
    epochs = re.findall(r"^epoch (\d) done", output, re.MULTILINE)
    assert epochs == ["0", "1", "2", "3"]
    before, after = validation_errors(output)
    assert after < 0.05 * before


@pytest.mark.slow
def test_under_torchrun_every_process_resumes_from_its_own_state_dict(tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "run.pt")
    two = [*torchrun(), "--standalone", "--nproc-per-node", "2", str(EXAMPLE)]
    one_run = run([*two, "--epochs", "2"], tmp_path)

    first = run([*two, "--epochs", "1", "--checkpoint", checkpoint], tmp_path)
    states = [json.loads((tmp_path / f"run-rank{r}.json").read_text()) for r in (0, 1)]
    # warnings as errors: a process loading another's state dict would fail the run.
    second = run([*two, "--epochs", "2", "--checkpoint", checkpoint], tmp_path, warnings="error")

    assert f"checkpoint saved to {checkpoint} after step 31" in first
    assert states[0]["step"] == states[1]["step"] == 31
    # A DistributedSampler's order comes from its seed and the epoch, the same on every
    # process: nothing of it is a process's own, so no process is recorded.
    assert all("process" not in state["data"] for state in states)
    assert f"resumed from {checkpoint} after step 31" in second
    assert "32 steps to go" in second
    assert validation_errors(second)[1] == validation_errors(one_run)[1]
