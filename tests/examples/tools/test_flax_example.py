"""examples/flax_train.py runs to completion on the CPU, its validation error falls, and a
run interrupted and resumed through its Orbax checkpoints ends where an uninterrupted one
does."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp  # type: ignore[import-untyped]  # no py.typed
import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flax_train.py"
TOTAL_STEPS = 320  # 64 batches x 5 epochs
STOP_AFTER_STEPS = 102  # inside epoch 1 and inside an accumulation window

pytestmark = pytest.mark.slow


def run_example(*arguments: str) -> str:
    """Run the example on the CPU with ``arguments``; return its output."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), *arguments],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def validation_errors(output: str) -> dict[str, float]:
    """The validation mse of each line that reports one, by what precedes it."""
    return {
        when: float(value)
        for when, value in re.findall(
            r"^(start|epoch \d+ done) +validation mse ([\d.]+)$", output, re.MULTILINE
        )
    }


def latest_checkpoint(directory: Path) -> tuple[int, Any, Any]:
    """The step, the ``state`` item (as saved) and the ``loop`` item of the latest
    checkpoint in ``directory``."""
    manager = ocp.CheckpointManager(directory)
    try:
        step = manager.latest_step()
        assert step is not None
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()),
        )
    finally:
        manager.close()
    return step, restored["state"], restored["loop"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("uninterrupted") / "checkpoint"
    return directory, run_example("--checkpoint", str(directory))


def test_the_flax_example_trains_and_its_validation_error_falls(
    uninterrupted: tuple[Path, str],
) -> None:
    directory, out = uninterrupted
    assert f"training for {TOTAL_STEPS} steps of 64 batches per epoch" in out
    errors = list(validation_errors(out).values())
    assert len(errors) == 6, out  # before training, then after each of 5 epochs
    assert all(later < earlier for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.1 * errors[0], errors
    kept = re.search(r"done in [\d.]+ s; checkpoints \[([\d, ]+)\]", out)
    assert kept is not None, out
    steps = [int(step) for step in kept.group(1).split(",")]
    assert 1 <= len(steps) <= 3  # max_to_keep=3
    assert steps[-1] == TOTAL_STEPS - 1  # saved at TRAINING_END, and finished
    assert sorted(
        path.name for path in (directory / str(steps[-1])).iterdir() if path.is_dir()
    ) == [
        "loop",
        "state",
    ]


def test_the_flax_example_resumes_from_its_orbax_checkpoint(
    tmp_path: Path, uninterrupted: tuple[Path, str]
) -> None:
    reference_directory, reference_out = uninterrupted
    directory = tmp_path / "checkpoint"
    first = run_example("--checkpoint", str(directory), "--stop-after-steps", str(STOP_AFTER_STEPS))
    assert f"stopped after step {STOP_AFTER_STEPS - 1}, as if interrupted" in first
    second = run_example("--checkpoint", str(directory))
    assert f"resumed from the checkpoint of step {STOP_AFTER_STEPS - 1}" in second
    assert f"training for {TOTAL_STEPS - STOP_AFTER_STEPS} steps" in second

    reference_errors = validation_errors(reference_out)
    resumed_errors = validation_errors(first) | validation_errors(second)
    for epoch in range(5):
        when = f"epoch {epoch} done"
        assert resumed_errors[when] == pytest.approx(reference_errors[when], rel=1e-4)

    step, state, loop = latest_checkpoint(directory)
    reference_step, reference_state, reference_loop = latest_checkpoint(reference_directory)
    assert step == reference_step == TOTAL_STEPS - 1
    assert loop["step"] == reference_loop["step"] == TOTAL_STEPS - 1
    assert loop["finished"]
    leaves = jax.tree.leaves(state)
    reference_leaves = jax.tree.leaves(reference_state)
    assert len(leaves) == len(reference_leaves) > 0
    for leaf, expected in zip(leaves, reference_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(leaf), np.asarray(expected), rtol=1e-6, atol=1e-7)
