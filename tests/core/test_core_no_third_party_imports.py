"""SPEC 1 and 5: importing and using dloop loads nothing outside the standard library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys

before = set(sys.modules)
import dloop
import dloop.testing
from dloop import Event, Loop, LoopEvents
from dloop.testing import ManualClock, ThreadSync

clock = ManualClock()
loop = Loop(
    range(5),
    max_epochs=3,
    events={
        "steps": Event(every_n_steps=2, at_step=3),
        "epochs": Event(every_n_epochs=1),
        "seconds": Event(every_n_seconds=1.0, at_time=[0.5]),
        "condition": Event(condition_function=lambda state: state.step == 4),
    },
    clock=clock,
    sync=ThreadSync(1, every_n_steps=2),
)
len(loop)
for batch, events in loop:
    clock.advance(0.25)
    state = loop.state
    if state.step == 6:
        saved = loop.state_dict()
resumed = Loop(range(5), max_epochs=3, clock=ManualClock())
resumed.load_state_dict(json.loads(json.dumps(saved)))
steps = sum(1 for _ in resumed)
assert LoopEvents.TRAINING_END in events and steps == 8, (events, steps)

new = sorted(set(sys.modules) - before)
print(json.dumps({"new": new, "all": sorted(sys.modules)}))
"""

FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "mlx", "numpy", "dloop_torch", "dloop_jax")


@pytest.mark.slow
def test_importing_and_using_dloop_loads_only_standard_library_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout)
    allowed = set(sys.stdlib_module_names) | {"dloop"}
    third_party = [name for name in modules["new"] if name.split(".")[0] not in allowed]
    assert third_party == []
    assert "dloop.testing" in modules["new"]  # the check did see dloop's own modules
    loaded = {name.split(".")[0] for name in modules["all"]}
    assert not loaded & set(FRAMEWORKS)
