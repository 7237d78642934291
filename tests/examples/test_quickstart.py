"""The standard-library quickstart runs to completion and learns the true line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart_runs_and_learns_the_line() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = result.stdout
    assert "training for 1000 steps" in out
    assert out.count("validation mse") == 5  # one validation per epoch
    assert "learning rate decayed" in out
    learned = re.search(r"learned y = ([-\d.]+)\*x0 ([-+\d.]+)\*x1 ([-+\d.]+)", out)
    assert learned is not None, out
    w0, w1, bias = (float(value) for value in learned.groups())
    assert abs(w0 - 3.0) < 0.1
    assert abs(w1 + 2.0) < 0.1
    assert abs(bias - 0.5) < 0.1
    assert re.search(r"[1-9]\d* checkpoints written", out)
