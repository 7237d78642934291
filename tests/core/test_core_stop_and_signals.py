"""Rules 18-19: request_stop, and opt-in stop signals (in a subprocess)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from _core_reference import (
    EPOCH_END,
    EPOCH_START,
    INTERRUPTED,
    TRAINING_END,
    drive,
    fired_steps,
)

from dloop import Event, Loop
from dloop.testing import ManualClock

WORKER = Path(__file__).with_name("_core_signal_worker.py")


def run_worker(scenario: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(WORKER), scenario],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


# ---------------------------------------------------------------- rule 18: request_stop


def test_request_stop_in_the_body_makes_the_next_batch_the_last_with_interrupted() -> None:
    loop = Loop(range(100), max_steps=100)
    records = drive(loop, ManualClock(), stop_in_body_of=6)
    assert [record.step for record in records] == list(range(8))
    assert records[-1].events == frozenset({TRAINING_END, INTERRUPTED})
    assert fired_steps(records, INTERRUPTED) == [7]


def test_request_stop_before_iterating_makes_the_first_batch_the_last() -> None:
    loop = Loop(range(100), max_epochs=3)
    loop.request_stop()
    records = drive(loop, ManualClock())
    assert len(records) == 1
    assert records[0].events == frozenset({EPOCH_START, TRAINING_END, INTERRUPTED})


def test_request_stop_keeps_the_other_events_of_the_last_batch() -> None:
    loop = Loop(range(4), max_epochs=5, events={"every_4": Event(every_n_steps=4)})
    records = drive(loop, ManualClock(), stop_in_body_of=6)
    assert records[-1].step == 7
    assert records[-1].events == frozenset({EPOCH_END, "every_4", TRAINING_END, INTERRUPTED})


def test_request_stop_on_the_last_batch_changes_nothing() -> None:
    loop = Loop(range(3), max_steps=3)
    records = drive(loop, ManualClock(), stop_in_body_of=2)
    assert len(records) == 3
    assert fired_steps(records, INTERRUPTED) == []
    assert fired_steps(records, TRAINING_END) == [2]


def test_request_stop_works_while_time_triggers_are_pending() -> None:
    clock = ManualClock()
    events = {"late": Event(every_n_seconds=1000.0, at_time=500.0)}
    loop = Loop(range(100), max_seconds=10_000.0, events=events, clock=clock)
    records = drive(loop, clock, lambda step: 1.0, stop_in_body_of=2)
    assert records[-1].step == 3
    assert INTERRUPTED in records[-1].events


def test_request_stop_only_sets_a_flag() -> None:
    loop = Loop(range(10), max_steps=10, clock=ManualClock())
    iterator = iter(loop)
    next(iterator)
    loop.request_stop()
    loop.request_stop()  # idempotent, does no work until the next batch
    assert loop.state.step == 0
    batch, events = next(iterator)
    assert (batch, events) == (1, frozenset({TRAINING_END, INTERRUPTED}))
    with pytest.raises(StopIteration):
        next(iterator)


def test_iterating_again_after_a_break_continues_the_run() -> None:
    loop = Loop(range(5), max_steps=5)
    first = []
    for batch, _ in loop:
        first.append(batch)
        if batch == 1:
            break
    assert first + [batch for batch, _ in loop] == [0, 1, 2, 3, 4]


def test_close_ends_the_run() -> None:
    loop = Loop(range(5), max_steps=5)
    iterator = iter(loop)
    next(iterator)
    loop.close()
    assert list(iterator) == []
    assert [batch for batch, _ in loop] == []


# ---------------------------------------------------------------- rule 19: stop signals


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["sigterm", "sigusr1"])
def test_a_stop_signal_mid_run_ends_the_run_after_the_next_batch_with_interrupted(
    scenario: str,
) -> None:
    output = run_worker(scenario)
    steps = output["steps"]
    assert [step["step"] for step in steps] == [0, 1, 2, 3, 4]
    assert steps[-1]["events"] == ["LoopEvents.INTERRUPTED", "LoopEvents.TRAINING_END"]
    # The handler is the loop's while it runs ...
    assert all(step["handlers"] == {"SIGTERM": "other", "SIGUSR1": "other"} for step in steps[:-1])
    # ... and the previous handlers are back as soon as the final batch is yielded.
    assert steps[-1]["handlers"] == {"SIGTERM": "previous", "SIGUSR1": "default"}
    assert output["after"] == {"SIGTERM": "previous", "SIGUSR1": "default"}


@pytest.mark.slow
def test_previous_handlers_are_back_on_the_final_batch_of_a_run_a_limit_ends() -> None:
    output = run_worker("limit")
    assert output["steps"][:-1] == [{"SIGTERM": "other", "SIGUSR1": "other"}] * 2
    assert output["steps"][-1] == {"SIGTERM": "previous", "SIGUSR1": "default"}


@pytest.mark.slow
def test_previous_handlers_are_back_after_loop_close() -> None:
    output = run_worker("close")
    assert output["during"] == {"SIGTERM": "other", "SIGUSR1": "other"}
    assert output["after"] == {"SIGTERM": "previous", "SIGUSR1": "default"}
    assert output["more"] == []


@pytest.mark.slow
def test_a_dropped_loop_is_freed_and_its_previous_handlers_come_back() -> None:
    output = run_worker("gc")
    assert output["during"] == {"SIGTERM": "other", "SIGUSR1": "other"}
    assert output["freed"] is True  # the handler does not keep the loop alive
    assert output["after"] == {"SIGTERM": "previous", "SIGUSR1": "default"}
    assert output["previous_calls"] == [signal.SIGTERM.value]


@pytest.mark.slow
def test_stop_signals_are_taken_only_while_the_loop_runs() -> None:
    output = run_worker("not_before")
    assert output["before"] == {"SIGTERM": "previous", "SIGUSR1": "default"}
    assert output["during"] == {"SIGTERM": "other", "SIGUSR1": "other"}
    assert output["after"] == {"SIGTERM": "previous", "SIGUSR1": "default"}


def test_stop_signals_from_a_non_main_thread_are_a_value_error() -> None:
    errors: list[BaseException] = []

    def construct() -> None:
        try:
            Loop(range(3), max_steps=3, stop_signals=(signal.SIGTERM,))
        except BaseException as error:  # handed to the main thread
            errors.append(error)

    thread = threading.Thread(target=construct, name="worker-7")
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ValueError)
    assert "main thread" in str(errors[0])
    assert "worker-7" in str(errors[0])


@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        ("SIGTERM", TypeError, r"stop_signals.*'SIGTERM'"),
        ([True], TypeError, r"stop_signals.*True"),
        ([signal.SIGKILL], ValueError, r"stop_signals.*SIGKILL"),
        ([-3], ValueError, r"stop_signals.*-3"),
    ],
)
def test_bad_stop_signals_are_rejected(value: Any, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        Loop(range(3), max_steps=3, stop_signals=value)
