"""Rules 22-27: bounds, clocks, stream ends, lengths and checked inputs, one case each.

Every case here was a hang, a crash, a lost batch or a silent wrong answer before these
rules; each test fails if its rule breaks. tox runs this file on the C accelerator and on
the pure-Python path (``DLOOP_PURE_PYTHON=1``).
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from _core_reference import (
    EPOCH_END,
    TRAINING_END,
    collect_batches,
    drive,
    fired_steps,
)

from dloop import Event, Loop, LoopWarning
from dloop.testing import ManualClock, ThreadSync

# ---------------------------------------------------------------- rule 22: bounds


@pytest.mark.parametrize(
    "make",
    [
        lambda: Event(every_n_seconds=1e-300),
        lambda: Event(every_n_seconds=1e-7),
        lambda: Event(every_n_seconds=1e12),
        lambda: Event(at_time=1e300),
        lambda: Event(at_time=[1.0, 1e13]),
        lambda: Loop(range(3), max_seconds=1e300),
        lambda: Loop(range(3), max_seconds=10**400),
    ],
)
def test_time_values_beyond_the_bounds_are_refused_where_given(make: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match=r"(every_n_seconds|at_time|max_seconds).*1e12 seconds"):
        make()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("max_steps", lambda n: Loop(range(3), max_steps=n)),
        ("max_epochs", lambda n: Loop(range(3), max_epochs=n)),
        ("epoch_length", lambda n: Loop(range(3), max_steps=3, epoch_length=n)),
        ("every_n_steps", lambda n: Event(every_n_steps=n)),
        ("every_n_epochs", lambda n: Event(every_n_epochs=n)),
        ("at_step", lambda n: Event(at_step=n)),
        ("at_step item", lambda n: Event(at_step=[1, n])),
    ],
)
def test_counts_must_be_below_2_to_the_62(name: str, make: Callable[[int], Any]) -> None:
    make(2**62 - 1)  # the largest accepted
    for value in (2**62, 2**63 + 5):
        with pytest.raises(ValueError, match=rf"{name} must be an int .*< 2\*\*62, got {value}"):
            make(value)


def test_the_loops_never_step_is_not_reachable_from_user_input() -> None:
    # max_steps=2**62 used to mean "no limit", and at_step=2**62 fired never.
    with pytest.raises(ValueError, match="max_steps"):
        Loop(range(3), max_steps=2**62 + 1)
    loop = Loop(range(3), max_steps=2**62 - 1, max_epochs=1, events={"e": Event(at_step=2)})
    assert fired_steps(drive(loop, ManualClock()), "e") == [2]


def test_len_of_a_loop_longer_than_its_step_bound_is_the_bound_not_an_overflow() -> None:
    # 1000 * 2**61 steps by the epochs; the run ends on step 2**62 - 1 (rule 22).
    loop = Loop(range(1000), max_epochs=2**61)
    assert len(loop) == loop.state.total_steps == 2**62
    assert len(Loop(range(1000), max_epochs=2**50)) == 1000 * 2**50


def test_data_longer_than_2_to_the_62_is_refused() -> None:
    class Huge:
        def __len__(self) -> int:
            return 2**62

        def __iter__(self) -> Iterator[int]:
            return iter(range(3))

    with pytest.raises(ValueError, match=r"len\(data\) must be below 2\*\*62"):
        Loop(Huge(), max_epochs=1)


def test_a_tiny_period_no_longer_hangs_the_loop() -> None:
    # 1e-6 is accepted; deadlines for it are found in constant time even far into a run.
    clock = ManualClock()
    loop = Loop(range(10), max_epochs=1, clock=clock, events={"t": Event(every_n_seconds=1e-6)})
    records = drive(loop, clock, lambda step: 1e8)  # a step of three years
    assert fired_steps(records, "t") == list(range(1, 10))


def test_deadlines_that_cannot_be_told_apart_during_a_run_raise_naming_the_event() -> None:
    clock = ManualClock()
    loop = Loop(range(5), max_epochs=1, clock=clock, events={"tiny": Event(every_n_seconds=1e-6)})
    with pytest.raises(ValueError, match=r"events\['tiny'\].*every_n_seconds=1e-06.*told apart"):
        drive(loop, clock, lambda step: 5e9)


def test_a_restored_elapsed_of_1e300_is_refused_naming_the_field() -> None:
    state = Loop(range(5), max_epochs=3).state_dict()
    state["elapsed"] = 1e300
    loop = Loop(range(5), max_epochs=3, events={"t": Event(every_n_seconds=1.0)})
    with pytest.raises(ValueError, match=r"'elapsed' has 1e\+300"):
        loop.load_state_dict(state)


def test_a_restored_elapsed_too_long_for_a_period_is_refused_naming_the_event() -> None:
    state = Loop(range(5), max_epochs=3).state_dict()
    state["elapsed"] = 1e11
    loop = Loop(range(5), max_epochs=3, events={"tiny": Event(every_n_seconds=1e-6)})
    with pytest.raises(ValueError, match=r"events\['tiny'\].*told apart"):
        loop.load_state_dict(state)


@pytest.mark.parametrize("step", [2**62, 2**63 - 1, 2**64])
def test_a_state_dict_step_near_2_to_the_63_is_refused(step: int) -> None:
    state = Loop(range(5), max_epochs=3).state_dict()
    state.update(step=step, epoch_step=0, epoch=0)
    with pytest.raises(ValueError, match=r"'step' has"):
        Loop(range(5), max_epochs=3).load_state_dict(state)


# ---------------------------------------------------------------- rule 27: stop signals


@pytest.mark.parametrize(
    "name", ["SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP", "SIGSYS"]
)
def test_fault_signals_are_refused_as_stop_signals(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} reports a fault"):
        Loop(range(3), max_steps=3, stop_signals=(getattr(signal, name),))


@pytest.mark.parametrize("name", ["SIGKILL", "SIGSTOP", "SIGCHLD", "SIGWINCH", "SIGCONT"])
def test_signals_that_do_not_ask_to_stop_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} (cannot be caught|does not ask)"):
        Loop(range(3), max_steps=3, stop_signals=(getattr(signal, name),))


@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGXCPU,
        signal.SIGRTMIN,
    ],
)
def test_signals_that_ask_a_process_to_stop_are_accepted(sig: int) -> None:
    before = signal.getsignal(sig)
    loop = Loop(range(3), max_steps=3, stop_signals=(sig,))
    assert len(list(loop)) == 3
    assert signal.getsignal(sig) == before


# ---------------------------------------------------------------- rule 23: clock readings


class ReadingClock:
    """A clock that returns the given readings one per call, then keeps the last one."""

    def __init__(self, readings: Sequence[object]) -> None:
        self.readings = list(readings)
        self.calls = 0

    def __call__(self) -> Any:
        reading = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        return reading


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("max_seconds", [None, 100.0])
def test_a_reading_that_is_not_finite_raises_on_that_step(
    bad: float, max_seconds: float | None
) -> None:
    # Readings: the origin, then steps 0, 1, 2, ...; step 3 gets the bad one.
    clock = ReadingClock([0.0, 1.0, 2.0, 3.0, bad, 5.0, 6.0])
    loop = Loop(range(10), max_epochs=1, max_seconds=max_seconds, clock=clock)
    seen: list[object] = []
    with pytest.raises(ValueError, match=rf"clock returned {bad!r} at step 3, not a finite"):
        collect_batches(loop, seen)
    assert seen == [0, 1, 2]


def test_a_nan_reading_no_longer_switches_max_seconds_off() -> None:
    clock = ReadingClock([0.0, 1.0, math.nan, 3.0])
    loop = Loop(iter(range(100)), max_seconds=5.0, clock=clock)
    with pytest.raises(ValueError, match="nan at step 1"):
        list(loop)


def test_a_reading_that_is_not_a_number_is_a_type_error_naming_the_clock() -> None:
    clock = ReadingClock([0.0, 1.0, "2.0", 3.0])
    with pytest.raises(TypeError, match=r"clock returned '2.0' \(a str\) at step 1"):
        list(Loop(range(5), max_epochs=1, clock=clock))


def test_a_reading_below_the_previous_one_counts_as_no_time_passing() -> None:
    clock = ReadingClock([10.0, 11.0, 13.0, 12.0, 9.0, 14.0, 13.5])
    loop = Loop(range(6), max_epochs=1, clock=clock, events={"t": Event(at_time=3.5)})
    elapsed, fired = [], []
    for _, events in loop:
        elapsed.append(loop.state.elapsed)
        fired.append("t" in events)
    assert elapsed == [1.0, 3.0, 3.0, 3.0, 4.0, 4.0]
    assert fired == [False, False, False, False, True, False]


def test_a_clock_in_nanoseconds_is_caught() -> None:
    clock = ReadingClock([0.0, 1.0, 2e12])
    with pytest.raises(ValueError, match=r"beyond 1e12 s: does the clock return seconds"):
        list(Loop(range(5), max_epochs=1, clock=clock))


# ---------------------------------------------------------------- rule 24: one-shot data


def test_a_finite_generator_that_runs_out_before_max_steps_ends_the_run_with_training_end() -> None:
    def generate() -> Iterator[int]:
        yield from range(3)

    loop = Loop(generate(), max_steps=10)
    with pytest.warns(LoopWarning, match=r"data ended at step 2, before max_steps=10"):
        records = drive(loop, ManualClock())
    assert [record.batch for record in records] == [0, 1, 2]
    assert records[-1].events == frozenset({EPOCH_END, TRAINING_END})
    assert loop.state.step == 2
    assert loop.state_dict()["finished"]


def test_a_finite_stream_with_max_seconds_that_runs_out_ends_with_training_end() -> None:
    clock = ManualClock(tick=1.0)
    with pytest.warns(LoopWarning, match=r"data ended at step 4, before max_seconds=1000"):
        records = drive(Loop(iter("abcde"), max_seconds=1000, clock=clock), clock)
    assert [record.batch for record in records] == list("abcde")
    assert TRAINING_END in records[-1].events


def test_a_stream_cut_into_epochs_that_ends_inside_an_epoch_has_no_epoch_end() -> None:
    with pytest.warns(LoopWarning, match=r"ended at step 9, before max_epochs=3"):
        records = drive(Loop(iter(range(10)), epoch_length=4, max_epochs=3), ManualClock())
    assert fired_steps(records, EPOCH_END) == [3, 7]
    assert fired_steps(records, TRAINING_END) == [9]


def test_a_stream_that_ends_with_its_epochs_needs_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = drive(Loop(iter(range(8)), epoch_length=4, max_epochs=2), ManualClock())
        single = drive(Loop(iter(range(3)), max_epochs=1), ManualClock())
    assert records[-1].events == frozenset({EPOCH_END, TRAINING_END})
    assert single[-1].events == frozenset({EPOCH_END, TRAINING_END})


def test_an_empty_stream_yields_nothing_and_says_so() -> None:
    with pytest.warns(LoopWarning, match=r"no batch left after step -1"):
        assert list(Loop(iter([]), max_steps=5)) == []


@pytest.mark.parametrize(
    ("options", "stop_in_body_of", "last"),
    [
        ({"max_steps": 4}, None, 3),
        ({"max_seconds": 4.0}, None, 3),
        ({"max_steps": 100}, 5, 6),
        ({"max_epochs": 2, "epoch_length": 3}, None, 5),
    ],
)
def test_a_stream_ended_by_a_limit_or_a_stop_keeps_its_next_batch(
    options: dict[str, Any], stop_in_body_of: int | None, last: int
) -> None:
    stream = iter(range(100))
    clock = ManualClock()
    loop = Loop(stream, clock=clock, **options)
    records = drive(loop, clock, lambda step: 1.0, stop_in_body_of=stop_in_body_of)
    assert [record.batch for record in records] == list(range(last + 1))
    assert next(stream) == last + 1


def test_a_stream_cut_into_epochs_resumes_after_every_batch_done_not_only_the_epochs() -> None:
    full = [record.batch for record in drive(stream_loop(), ManualClock())]
    first = stream_loop()
    done = drive(first, ManualClock(), until_step=5)
    state = json.loads(json.dumps(first.state_dict()))
    second = stream_loop()
    second.load_state_dict(state)
    rest = drive(second, ManualClock())
    assert [record.batch for record in done + rest] == full == list(range(12))
    assert [record.step for record in rest] == list(range(6, 12))


def stream_loop() -> Loop[int]:
    return Loop(iter(range(100)), epoch_length=4, max_epochs=3)


def test_a_resume_over_a_stream_shorter_than_the_saved_position_is_an_error() -> None:
    first = Loop(iter(range(100)), max_steps=50)
    drive(first, ManualClock(), until_step=9)
    second = Loop(iter(range(5)), max_steps=50)
    second.load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match=r"one-shot data gave 5 batches.*10 were already done"):
        list(second)


# ---------------------------------------------------------------- rule 25: lengths


class EpochSizedData:
    """Data whose len() after set_epoch(e) is lengths[e] (a sampler re-sharded per epoch);
    ``extra`` more batches than that are yielded in epoch ``extra_in``."""

    def __init__(self, lengths: Sequence[int], extra: int = 0, extra_in: int = -1) -> None:
        self.lengths = list(lengths)
        self.epoch = 0
        self.extra = extra
        self.extra_in = extra_in

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.lengths[self.epoch]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        more = self.extra if self.epoch == self.extra_in else 0
        return iter([(self.epoch, index) for index in range(len(self) + more)])


def test_len_data_is_read_at_the_start_of_every_epoch_after_set_epoch() -> None:
    records = drive(Loop(EpochSizedData([3, 5, 2]), max_epochs=3), ManualClock())
    assert fired_steps(records, EPOCH_END) == [2, 7, 9]
    assert [record.batch for record in records][3:8] == [(1, index) for index in range(5)]


def test_data_that_yields_more_batches_than_its_len_is_an_error_naming_the_epoch() -> None:
    loop = Loop(EpochSizedData([3, 3, 3], extra=1, extra_in=1), max_epochs=3)
    seen: list[object] = []
    with pytest.raises(ValueError, match=r"more batches in epoch 1 than its len\(\) = 3"):
        collect_batches(loop, seen)
    assert len(seen) == 6


def test_epoch_length_cuts_data_that_holds_more() -> None:
    records = drive(
        Loop(EpochSizedData([3, 3], extra=5, extra_in=0), max_epochs=2, epoch_length=3),
        ManualClock(),
    )
    assert fired_steps(records, EPOCH_END) == [2, 5]


def test_len_total_steps_progress_and_eta_are_exact_after_a_resume_with_a_new_epoch_length() -> (
    None
):
    first = Loop(list(range(10)), max_epochs=3)
    drive(first, ManualClock(), until_step=9)
    state = json.loads(json.dumps(first.state_dict()))
    clock = ManualClock(tick=1.0)
    second = Loop(list(range(8)), max_epochs=3, clock=clock)
    second.load_state_dict(state)
    assert len(second) == 16
    assert second.state.total_steps == 26
    records = drive(second, clock)
    assert len(records) == 16
    assert second.state.total_steps == 26
    assert second.state.progress == 1.0


def test_len_follows_lengths_that_change_between_epochs() -> None:
    loop = Loop(EpochSizedData([3, 5, 2]), max_epochs=3)
    assert len(loop) == 9  # before iterating: the length the data has now
    totals = []
    for _ in loop:
        totals.append(loop.state.total_steps)
    # Epochs still to come are counted at the length of the current one.
    assert totals == [9] * 3 + [13] * 5 + [10] * 2


# ---------------------------------------------------------------- rule 26: step-time estimate


def test_a_slow_first_step_does_not_stop_max_seconds_early() -> None:
    clock = ManualClock()
    loop = Loop(iter(range(10**6)), max_seconds=60, clock=clock)
    records = drive(loop, clock, lambda step: 30.0 if step == 0 else 0.125)
    assert records[-1].elapsed == 59.875
    assert len(records) == 241
    assert TRAINING_END in records[-1].events


def test_the_example_of_rule_26_runs_until_about_59_9_seconds() -> None:
    clock = ManualClock()
    records = drive(
        Loop(range(1000), max_seconds=60, max_epochs=10, clock=clock),
        clock,
        lambda step: 30.0 if step == 0 else 0.1,
    )
    assert 59.8 < records[-1].elapsed < 60.0
    assert 299 <= len(records) <= 302


def test_an_occasional_slow_step_does_not_rule_the_estimate() -> None:
    clock = ManualClock()
    loop = Loop(
        range(100),
        max_seconds=100,
        max_epochs=100,
        clock=clock,
        events={"c": Event(every_n_steps=50)},
    )
    records = drive(loop, clock, lambda step: 20.0 if step == 99 else 0.25)
    # 99 steps of 0.25 s, one checkpoint step of 20 s, then 0.25 s steps to the budget.
    assert records[-1].elapsed == 99.75
    assert TRAINING_END in records[-1].events


def test_a_resumed_run_does_not_measure_its_first_step_either() -> None:
    clock = ManualClock()
    first = Loop(range(10), max_seconds=100, max_epochs=50, clock=clock)
    drive(first, clock, lambda step: 1.0, until_step=20)
    state = json.loads(json.dumps(first.state_dict()))
    clock = ManualClock(start=5000)
    second = Loop(range(10), max_seconds=100, max_epochs=50, clock=clock)
    second.load_state_dict(state)
    # The first step after the restart recompiles for 30 s; then 1 s again.
    records = drive(second, clock, lambda step: 30.0 if step == 21 else 1.0)
    assert records[-1].elapsed == 99.0


# ---------------------------------------------------------------- rule 27: checked inputs


class ScriptedSync:
    """A sync whose combine returns what a test says."""

    def __init__(self, answer: Callable[[Sequence[int]], object], every_n_steps: int = 2) -> None:
        self.every_n_steps = every_n_steps
        self.answer = answer

    def combine(self, flags: Sequence[int]) -> Any:
        return self.answer(flags)

    def __repr__(self) -> str:
        return "ScriptedSync()"


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (lambda flags: None, TypeError, r"returned None .*sequence of 7 ints"),
        (lambda flags: "abc", TypeError, r"returned 'abc'"),
        (lambda flags: list(flags)[:-1], ValueError, r"returned 6 values for 7 flags"),
        (lambda flags: [*flags[:-1], 1.5], TypeError, r"returned 1.5 \(a float\) at index 6"),
        (lambda flags: [*flags[:-1], True], TypeError, r"returned True \(a bool\)"),
        (lambda flags: [-1, *flags[1:]], ValueError, r"returned -1 at index 0"),
        (lambda flags: [2**62, *flags[1:]], ValueError, r"returned 4611686018427387904"),
        (
            lambda flags: [0] * len(flags),
            ValueError,
            r"returned 0 at index 4 .*not the element-wise",
        ),
    ],
)
def test_a_combine_result_that_is_not_an_element_wise_maximum_raises_naming_the_sync(
    answer: Callable[[Sequence[int]], object], error: type[Exception], match: str
) -> None:
    loop = Loop(range(10), max_epochs=1, sync=ScriptedSync(answer))
    with pytest.raises(error, match=rf"sync.combine of ScriptedSync\(\) {match}"):
        list(loop)


def test_sync_every_n_steps_is_read_once_at_construction() -> None:
    sync = ThreadSync(1, every_n_steps=4)
    clock = ManualClock()
    loop = Loop(
        range(20), max_epochs=1, sync=sync, clock=clock, events={"t": Event(every_n_seconds=1.0)}
    )
    sync.every_n_steps = 3  # too late: the loop agrees every 4 steps, as it was built with
    records = drive(loop, clock, lambda step: 1.0)
    assert fired_steps(records, "t") == [3, 7, 11, 15, 19]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("step_seconds", math.nan, r"'step_seconds' has nan"),
        ("step_seconds", math.inf, r"'step_seconds' has inf"),
        ("step_seconds", -1.0, r"'step_seconds' has -1.0"),
        ("step_seconds", "1", r"'step_seconds' has '1'"),
        ("elapsed", math.nan, r"'elapsed' has nan"),
        ("elapsed", -0.5, r"'elapsed' has -0.5"),
        ("epoch_length", 0, r"'epoch_length' has 0"),
        ("finished", 1, r"'finished' has 1"),
        ("epoch", -1, r"'epoch' has -1"),
        ("events", [], r"'events' has \[\]"),
        ("events", {"t": 5}, r"events\['t'\] must map"),
        ("events", {"t": {"every": 1}}, r"events\['t'\] has unknown key"),
        ("events", {"t": {"every_n_seconds": [1.0]}}, r"events\['t'\]\['every_n_seconds'\]"),
        ("events", {"t": {"every_n_seconds": [0.0, 1]}}, r"\['every_n_seconds'\] must be"),
        ("events", {"t": {"every_n_seconds": [1.0, 0]}}, r"\['every_n_seconds'\] must be"),
        ("events", {"t": {"every_n_seconds": [1.0, 2**60]}}, r"cannot be told apart"),
        ("events", {"t": {"at_time_pending": 3.0}}, r"\['at_time_pending'\] must be a list"),
        ("events", {"t": {"at_time_pending": [math.nan]}}, r"\['at_time_pending'\]"),
    ],
)
def test_load_state_dict_checks_every_field_and_leaves_the_loop_as_it_was(
    field: str, value: object, match: str
) -> None:
    saved = saved_state()
    saved[field] = value
    clock = ManualClock()
    loop = Loop(range(10), max_epochs=3, clock=clock, events={"t": Event(every_n_seconds=1.0)})
    before = loop.state, loop.state_dict()
    with pytest.raises(ValueError, match=match):
        loop.load_state_dict(saved)
    assert (loop.state, loop.state_dict()) == before
    assert [record.step for record in drive(loop, clock)] == list(range(30))


def saved_state() -> dict[str, Any]:
    clock = ManualClock()
    loop = Loop(range(10), max_epochs=3, clock=clock, events={"t": Event(every_n_seconds=1.0)})
    drive(loop, clock, lambda step: 0.5, until_step=12)
    saved: dict[str, Any] = json.loads(json.dumps(loop.state_dict()))
    return saved


# ---------------------------------------------------------------- rule 22: no crash


CRASH_SCRIPT = """
import gc
from dloop import _speedups
Stepper = _speedups.Stepper
EMPTY = frozenset()

class Big:
    __slots__ = tuple(f"s{i}" for i in range(2000)) + ("step", "now")

class Impostor:
    # The names the accelerator looks for, with the signatures it calls them with, on an
    # object of another type whose step and now are another class's slot descriptors, far
    # beyond this object's memory (this crashed the accelerator when it wrote slots by
    # offset). Well formed, it runs: the variants below each return something wrong.
    step = Big.step
    now = Big.now
    time_cell = [1e300]
    clock = staticmethod(lambda: 0.0)
    signals = type("S", (), {"restore": staticmethod(lambda: None)})()
    start_step = -1
    def __getattribute__(self, name):
        if name in ("step", "now"):
            return object.__getattribute__(self, "start_step") if name == "step" else 0.0
        return object.__getattribute__(self, name)
    def __setattr__(self, name, value): pass
    def _begin(self): return True
    def _open_sized_epoch(self): return (iter(range(100)), 0)
    def _raise_short_epoch(self): raise ValueError("short")
    def _decide(self, step, now, floor): return (EMPTY, step + 3, 0, 0.0)  # 2 quiet steps
    def _end(self): pass

def variant(**methods):
    return type("Variant", (Impostor,), methods)

VARIANTS = {
    "well-formed": Impostor,
    "open - garbage": variant(_open_sized_epoch=lambda self: ("no iterator", "no step")),
    "open - None": variant(_open_sized_epoch=lambda self: None),
    "open - huge step": variant(_open_sized_epoch=lambda self: (iter(range(9)), 2**70)),
    "open - step 2**63": variant(_open_sized_epoch=lambda self: (iter(range(9)), 2**63)),
    "open - negative step": variant(_open_sized_epoch=lambda self: (iter(range(9)), -7)),
    "decide - None": variant(_decide=lambda self, s, n, f: None),
    "decide - short": variant(_decide=lambda self, s, n, f: (EMPTY, s + 1, 0)),
    "decide - str step": variant(_decide=lambda self, s, n, f: (EMPTY, "x", 0, 0.0)),
    "decide - huge step": variant(_decide=lambda self, s, n, f: (EMPTY, 2**64, 0, 0.0)),
    "decide - str status": variant(_decide=lambda self, s, n, f: (EMPTY, s + 1, "x", 0.0)),
    "decide - huge status": variant(_decide=lambda self, s, n, f: (EMPTY, s + 1, 2**80, 0.0)),
    "decide - status 7": variant(_decide=lambda self, s, n, f: (EMPTY, s + 1, 7, 0.0)),
    "decide - str now": variant(_decide=lambda self, s, n, f: (EMPTY, s + 1, 0, "now")),
    "decide - raises": variant(_decide=lambda self, s, n, f: 1 / 0),
    "decide - finishes, end raises": variant(
        _decide=lambda self, s, n, f: (EMPTY, s + 1, 2, 0.0), _end=lambda self: 1 / 0
    ),
    "start at 2**63": variant(start_step=2**63),
    "start at 2**62 + 1": variant(start_step=2**62 + 1),
    "start at a str": variant(start_step="x"),
    "cell - not a list": variant(time_cell=(1e300,)),
    "cell - empty": variant(time_cell=[]),
    "no _end": type("NoEnd", (), {k: v for k, v in vars(Impostor).items() if k != "_end"}),
}

def attempt(make):
    try:
        stepper = make()
        for _ in range(50):
            next(stepper)
        stepper.settle()
    except (TypeError, AttributeError, ValueError, StopIteration, RuntimeError,
            IndexError, ZeroDivisionError, OverflowError) as error:
        return type(error).__name__
    return "ran"

class Layout:
    __slots__ = ("step", "now", "x", "y")

for name, make in [
    ("object", lambda: Stepper(object(), EMPTY)),
    ("layout", lambda: Stepper(Layout(), EMPTY)),
    ("int", lambda: Stepper(42, EMPTY)),
    ("set for empty", lambda: Stepper(Impostor(), set())),
    ("no arguments", lambda: Stepper()),
    *[(name, lambda cls=cls: Stepper(cls(), EMPTY)) for name, cls in VARIANTS.items()],
    *[("well-formed again", lambda: Stepper(Impostor(), EMPTY))] * 20,
]:
    print(f"{name}: {attempt(make)}")
gc.collect()
print("alive")
"""


def test_the_c_stepper_given_objects_of_another_type_raises_and_never_crashes() -> None:
    """Private, but no Python object may crash the interpreter through it (rule 22): each
    object is refused with an exception, or (well formed) runs."""
    pytest.importorskip("dloop._speedups")
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "alive"
    outcomes = dict(line.rsplit(": ", 1) for line in lines[:-1])
    assert outcomes.pop("well-formed") == "ran"
    assert outcomes.pop("well-formed again") == "ran"
    assert "ran" not in outcomes.values(), outcomes
    assert outcomes["open - huge step"] == outcomes["start at 2**63"] == "ValueError"
    assert outcomes["decide - huge step"] == outcomes["start at 2**62 + 1"] == "ValueError"
    assert outcomes["decide - finishes, end raises"] == "ZeroDivisionError"


def test_a_loop_warning_points_at_the_users_for_loop() -> None:
    with pytest.warns(LoopWarning) as caught:
        for _ in Loop(iter(range(3)), max_steps=10):
            pass
    assert caught[0].filename == __file__


@pytest.mark.parametrize("with_sync", [False, True])
def test_an_infinite_reading_on_a_step_event_raises_on_that_step(with_sync: bool) -> None:
    clock = ReadingClock([0.0, 1.0, 2.0, math.inf, 4.0])
    sync = ThreadSync(1, every_n_steps=50) if with_sync else None
    loop = Loop(range(10), max_epochs=1, clock=clock, sync=sync, events={"e": Event(at_step=2)})
    seen: list[object] = []
    with pytest.raises(ValueError, match=r"clock returned inf at step 2"):
        collect_batches(loop, seen)
    assert seen == [0, 1]
