"""examples/torch_uneven.py: two processes over unequal shards train with DDP without a
hang, and validate over every sample exactly once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "torch_uneven.py"


@pytest.mark.slow
def test_the_uneven_example_trains_on_two_processes_and_counts_every_sample_once() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    epochs = re.findall(
        r"epoch (\d): (\d+) steps on every rank, .* over (\d+) samples", result.stdout
    )
    # 400 samples in batches of 16 on the shorter rank: 25 steps per epoch on both.
    assert epochs == [("0", "25", "227"), ("1", "25", "227")]
    found = re.search(r"validation mse ([\d.]+) -> ([\d.]+)$", result.stdout.strip())
    assert found is not None, result.stdout
    assert float(found[2]) < float(found[1]) / 10
    assert result.stderr.count("leaves 8 batches of epoch") == 2  # rank 0, each epoch
