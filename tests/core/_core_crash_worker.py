"""A training run that a test kills with SIGKILL and resumes from its last checkpoint.

Usage: ``python _core_crash_worker.py DIRECTORY KIND RUN KILL_AT PHASE``.

The run resumes from ``DIRECTORY/checkpoint.json`` when it exists, appends one JSON line
``[step, batch, events]`` per step to ``DIRECTORY/trace-RUN.jsonl``, and replaces the
checkpoint atomically (write a temporary file, then ``os.replace``) every
``CHECKPOINT_EVERY`` steps. At step ``KILL_AT`` it kills itself with SIGKILL at ``PHASE``:
before writing the trace line, after it, or after the checkpoint of that step. Time comes
from a ManualClock moved by fixed per-step durations, so the run is deterministic.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from _core_reference import EpochData, FastSkipData, SizedEpochData, cycle, named

from dloop import Event, Loop
from dloop.testing import ManualClock

EPOCH_LENGTH = 11
MAX_EPOCHS = 5
LAST_STEP = EPOCH_LENGTH * MAX_EPOCHS - 1
CHECKPOINT_EVERY = 4
KINDS = ("sized", "unsized", "iter-from")
PHASES = ("before-trace", "after-trace", "after-checkpoint")
DURATIONS = cycle([0.5, 0.25, 1.0, 0.75])

Entry = list[Any]
"""``[step, batch, sorted event names]``, as it reads back from JSON."""


def build_loop(kind: str, clock: ManualClock) -> Loop[Any]:
    """The run's loop over deterministic data whose batches are ``[epoch, index]``."""
    data: EpochData
    if kind == "sized":
        data = SizedEpochData(EPOCH_LENGTH)
    elif kind == "unsized":
        data = EpochData(EPOCH_LENGTH)
    else:
        data = FastSkipData(EPOCH_LENGTH)
    return Loop(
        data,
        max_epochs=MAX_EPOCHS,
        clock=clock,
        events={
            "every_3": Event(every_n_steps=3),
            "at_steps": Event(at_step=[4, 20, 41]),
            "every_2_epochs": Event(every_n_epochs=2),
            "seconds": Event(every_n_seconds=2.5),
            "times": Event(at_time=[3.0, 17.25]),
        },
    )


def entry(step: int, batch: object, events: frozenset[Any]) -> Entry:
    return json.loads(json.dumps([step, batch, named(events)]))  # type: ignore[no-any-return]


def uninterrupted_trace(kind: str) -> list[Entry]:
    """The trace of the whole run without a crash, computed in this process."""
    clock = ManualClock()
    loop = build_loop(kind, clock)
    trace = []
    for batch, events in loop:
        trace.append(entry(loop.state.step, batch, events))
        clock.advance(DURATIONS(loop.state.step))
    return trace


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` so that a reader sees the old or the new file, whole."""
    temporary = path.with_suffix(".tmp")
    with temporary.open("w") as file:
        file.write(text)
        file.flush()
    os.replace(temporary, path)


def main(directory: Path, kind: str, run: int, kill_at: int, phase: str) -> None:
    checkpoint = directory / "checkpoint.json"
    clock = ManualClock()
    loop = build_loop(kind, clock)
    if checkpoint.exists():
        loop.load_state_dict(json.loads(checkpoint.read_text()))
    with (directory / f"trace-{run}.jsonl").open("a") as trace:
        for batch, events in loop:
            step = loop.state.step
            if step == kill_at and phase == "before-trace":
                os.kill(os.getpid(), signal.SIGKILL)
            trace.write(json.dumps(entry(step, batch, events)) + "\n")
            trace.flush()  # in the kernel now: SIGKILL cannot lose it
            if step == kill_at and phase == "after-trace":
                os.kill(os.getpid(), signal.SIGKILL)
            clock.advance(DURATIONS(step))  # the body's work
            if step % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                write_atomically(checkpoint, json.dumps(loop.state_dict()))
            if step == kill_at and phase == "after-checkpoint":
                os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
