"""examples/jax_train.py runs to completion on the CPU and its validation error falls."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from jax_processes import environment

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "jax_train.py"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("cpu_devices", [1, 4])
def test_the_jax_example_trains_and_its_validation_error_falls(cpu_devices: int) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=environment(cpu_devices=cpu_devices),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"training for 800 steps on {cpu_devices} cpu device(s)" in out
    layout = "batches split across them" if cpu_devices > 1 else "batches on one device"
    assert f"on {cpu_devices} cpu device(s), {layout}" in out
    errors = [float(value) for value in re.findall(r"validation mse ([\d.]+)", out)]
    assert len(errors) == 6, out  # before training, then after each of 5 epochs
    assert errors[-1] < 0.1 * errors[0], errors
    assert "step  600  learning rate decayed to 0.02" in out
    assert re.search(r"done in [\d.]+ s; [1-9]\d* checkpoint\(s\)", out), out
