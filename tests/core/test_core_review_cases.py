"""Cases found in review: a finished run stays finished after a resume, nested loops
leave no signal ignored, and a stopped one-shot stream keeps its next item."""

from __future__ import annotations

import json
import signal
from types import FrameType

from dloop import Loop, LoopEvents
from dloop.testing import ManualClock


def run_to_end(loop: Loop[int], clock: ManualClock) -> list[int]:
    steps = []
    for _ in loop:
        steps.append(loop.state.step)
        clock.advance(1.0)
    return steps


def test_a_run_ended_by_max_seconds_stays_ended_after_a_resume() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_seconds=3.0, clock=clock)
    assert run_to_end(loop, clock)[-1] == 2  # 2 s + 1 s expected step reaches 3 s
    state = json.loads(json.dumps(loop.state_dict()))

    resumed = Loop(range(100), max_seconds=3.0, max_steps=100, clock=ManualClock())
    resumed.load_state_dict(state)
    assert len(resumed) == 0
    assert list(resumed) == []


def test_a_run_ended_by_max_seconds_goes_on_when_the_budget_is_raised() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_seconds=3.0, clock=clock)
    run_to_end(loop, clock)
    state = loop.state_dict()

    clock = ManualClock()
    resumed = Loop(range(100), max_seconds=6.0, clock=clock)
    resumed.load_state_dict(state)
    assert run_to_end(resumed, clock) == [3, 4, 5]


def test_a_run_ended_by_a_stop_request_resumes() -> None:
    clock = ManualClock()
    loop = Loop(range(100), max_seconds=1000.0, clock=clock)
    for _, events in loop:
        if loop.state.step == 4:
            loop.request_stop()
        if LoopEvents.INTERRUPTED in events:
            state = loop.state_dict()
    resumed = Loop(range(100), max_steps=8)
    resumed.load_state_dict(state)
    assert [resumed.state.step for _ in resumed] == [6, 7]


def test_nested_loops_closed_out_of_order_leave_no_signal_ignored() -> None:
    received: list[int] = []

    def original(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    before = signal.signal(signal.SIGUSR1, original)
    try:
        outer = Loop(range(10), max_steps=10, stop_signals=(signal.SIGUSR1,))
        inner = Loop(range(10), max_steps=10, stop_signals=(signal.SIGUSR1,))
        next(iter(outer))
        next(iter(inner))
        outer.close()  # before the inner loop: its handler sits on top of outer's
        inner.close()
        handler = signal.getsignal(signal.SIGUSR1)
        assert callable(handler)
        handler(signal.SIGUSR1, None)  # what the signal would do now
        assert received == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_stop_request_does_not_read_a_one_shot_stream_past_the_last_batch() -> None:
    stream = iter(range(100))
    loop = Loop(stream, max_steps=50)
    batches = []
    for batch, _ in loop:
        batches.append(batch)
        if batch == 2:
            loop.request_stop()
    assert batches == [0, 1, 2, 3]
    assert next(stream) == 4
