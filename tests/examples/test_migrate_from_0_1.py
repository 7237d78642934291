"""The migration guide's "after" loop (examples/migrate_from_0_1.py) runs and counts right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "migrate_from_0_1.py"


def run_example() -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=True
    )
    counts = {}
    for line in result.stdout.splitlines():
        name, _, count = line.partition(": ")
        counts[name] = int(count)
    return counts


def test_the_0_1_0_readme_loop_runs_on_0_2_0_with_global_step_counts() -> None:
    assert run_example() == {
        "samples": 3_000,  # 3 epochs of 1,000 batches of one sample
        "ModelParametersUpdate": 187,  # every 16 steps, counted across epochs (0.1.0: 186)
        "PerEpochUpdate": 186,  # 0.1.0's count, restarted in every epoch
        "Logging": 30,
        "EPOCH_END": 3,
        "TRAINING_END": 1,
        # DecreaseLR (step 10,000), HourlyCheckpoint and TenMinuteWarning: not reached
    }


def test_the_migration_page_shows_the_loop_that_runs_here() -> None:
    page = (ROOT / "docs" / "migration.md").read_text()
    assert '--8<-- "examples/migrate_from_0_1.py:after"' in page
    source = EXAMPLE.read_text()
    assert "# --8<-- [start:after]" in source
    assert "# --8<-- [end:after]" in source
