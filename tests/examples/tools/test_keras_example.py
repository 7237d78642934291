"""examples/keras_train.py trains, saves through Keras, and resumes from its checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "keras_train.py"

pytestmark = pytest.mark.slow


def run_example(*arguments: str) -> str:
    """Run the example with Keras on CPU JAX; return its output, failing on an error."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def validation_errors(out: str) -> list[float]:
    return [float(value) for value in re.findall(r"validation mse ([\d.]+)", out)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The output of one complete run of 5 epochs, and its checkpoint folder."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    return run_example("--checkpoint", str(directory)), directory


def test_the_keras_example_trains_and_its_validation_error_falls(
    uninterrupted: tuple[str, Path],
) -> None:
    out, directory = uninterrupted
    assert "training for 320 steps on jax" in out
    errors = validation_errors(out)
    assert len(errors) == 6, out  # before training, then after each of 5 epochs
    assert errors[-1] < 0.05 * errors[0], errors
    assert errors[-1] < errors[1], errors
    assert re.search(r"done after step 319 in [\d.]+ s; [1-9]\d* checkpoint\(s\)", out), out
    # The checkpoint of the last step, and only that one, is left.
    assert sorted(path.name for path in directory.iterdir()) == ["loop.json", "step-000319"]
    assert sorted(path.name for path in (directory / "step-000319").iterdir()) == [
        "gradients.npz",
        "model.keras",
    ]


def test_the_keras_example_resumes_from_its_checkpoint_where_it_stopped(
    uninterrupted: tuple[str, Path], tmp_path: Path
) -> None:
    directory = tmp_path / "checkpoint"
    first = run_example("--checkpoint", str(directory), "--stop-after-steps", "100")
    resumed = run_example("--checkpoint", str(directory))

    assert "training for 100 steps on jax" in first
    assert "done after step 99 " in first
    assert "resumed from" in resumed
    assert "after step 99" in resumed
    assert "training for 220 steps on jax" in resumed  # len(loop): the steps still to come
    # Epochs 1 to 4 end on the same validation errors as in the uninterrupted run.
    epoch_ends = re.compile(r"epoch \d done   validation mse [\d.]+")
    assert epoch_ends.findall(first) == epoch_ends.findall(uninterrupted[0])[:1]
    assert epoch_ends.findall(resumed) == epoch_ends.findall(uninterrupted[0])[1:]
    assert "done after step 319 " in resumed
