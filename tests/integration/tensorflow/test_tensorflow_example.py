"""examples/tensorflow_train.py runs to completion and its model learns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tensorflow_train.py"


@pytest.mark.slow
def test_the_tensorflow_example_trains_and_logs_every_epoch() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "training for 384 steps (64 batches x 6 epochs)" in output
    epochs = [int(epoch) for epoch in re.findall(r"^epoch (\d+) done", output, re.MULTILINE)]
    assert epochs == [0, 1, 2, 3, 4, 5]
    assert re.search(r"^step  256  learning rate decayed to 0\.001$", output, re.MULTILINE)
    logged = re.findall(r"^step +(\d+) +epoch \d+ +train loss", output, re.MULTILINE)
    assert [int(step) for step in logged] == [63, 127, 191, 255, 319, 383]
    assert re.search(r"^96 updates in ", output, re.MULTILINE)
    before = float(re.findall(r"before training +validation mse ([\d.]+)", output)[0])
    after = float(re.findall(r"final validation mse ([\d.]+)", output)[0])
    assert after < 0.05 * before
