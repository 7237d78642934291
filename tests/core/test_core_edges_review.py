"""Rules 22-28 at the edges a second review found: each case here failed before its fix.

Huge ints where floats are expected, clocks of other number types, state dicts whose parts
do not fit together, look-aheads that read more than the run can use, errors of the data
met while looking ahead, the last epoch's ``len()``, and the step bound. tox runs this file
on the C accelerator and on the pure-Python path (``DLOOP_PURE_PYTHON=1``).
"""

from __future__ import annotations

import itertools
import json
import threading
import warnings
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from _core_reference import EPOCH_END, TRAINING_END, drive, fired_steps

from dloop import Event, Loop, LoopWarning
from dloop.testing import ManualClock, ThreadSync

HUGE = 10**400
"""An int that JSON can hold and no float can."""


def collect(loop: Loop[Any], into: list[Any]) -> None:
    """Iterate ``loop``, appending each (batch, events) to ``into`` (kept when it raises)."""
    for batch, events in loop:
        into.append((batch, events))


def saved(**changes: Any) -> dict[str, Any]:
    """A state dict of a loop over ``range(10)`` (3 epochs, an every_n_seconds event),
    saved in the body of step 12 after 0.5 s per step, with ``changes``."""
    clock = ManualClock()
    loop = Loop(range(10), max_epochs=3, clock=clock, events={"t": Event(every_n_seconds=1.0)})
    drive(loop, clock, lambda step: 0.5, until_step=12)
    state: dict[str, Any] = json.loads(json.dumps(loop.state_dict()))
    state.update(changes)
    return state


def fresh() -> tuple[Loop[int], ManualClock]:
    clock = ManualClock()
    loop = Loop(range(10), max_epochs=3, clock=clock, events={"t": Event(every_n_seconds=1.0)})
    return loop, clock


# ---------------------------------------------------------------- rule 22/23/27: huge ints


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"elapsed": HUGE}, r"'elapsed' has 1000.*0, expected a finite number"),
        ({"step_seconds": HUGE}, r"'step_seconds' has 1000.*0, expected a finite number"),
        ({"events": {"t": {"every_n_seconds": [HUGE, 1]}}}, r"\['every_n_seconds'\] must be"),
        ({"events": {"t": {"at_time_pending": [HUGE]}}}, r"\['at_time_pending'\] must be"),
        ({"version": True}, r"version True is not supported"),
    ],
)
def test_a_state_dict_with_ints_no_float_can_hold_is_refused_naming_the_field(
    changes: dict[str, Any], match: str
) -> None:
    loop, clock = fresh()
    with pytest.raises(ValueError, match=match) as raised:
        loop.load_state_dict(saved(**changes))
    assert len(str(raised.value)) < 300  # the value is shown shortened, not 400 digits
    assert [record.step for record in drive(loop, clock)] == list(range(30))


def test_a_clock_reading_no_float_can_hold_is_a_value_error_naming_it() -> None:
    loop = Loop(range(5), max_epochs=1, clock=lambda: HUGE)
    with pytest.raises(ValueError, match=r"clock returned 1000.*0 when iteration began, not a fin"):
        list(loop)


def test_a_len_beyond_what_len_can_return_is_a_value_error_naming_len_data() -> None:
    class Endless:
        def __len__(self) -> int:
            return 2**64

        def __iter__(self) -> Iterator[int]:
            return iter(range(3))

    with pytest.raises(ValueError, match=r"len\(data\) must be below 2\*\*62"):
        Loop(Endless(), max_epochs=1)


@pytest.mark.parametrize("trigger", ["at_step", "at_time"])
@pytest.mark.parametrize("items", [range(0, 2**62 - 1, 2**20), range(2**70), range(2**20 + 1)])
def test_a_trigger_collection_too_long_to_keep_is_refused_before_reading_it(
    trigger: str, items: range
) -> None:
    triggers: dict[str, Any] = {trigger: items}
    with pytest.raises(ValueError, match=rf"{trigger} has .* items; at most 1,048,576"):
        Event(**triggers)
    largest: dict[str, Any] = {trigger: range(2**20)}
    assert getattr(Event(**largest), trigger) == tuple(range(2**20))


# ---------------------------------------------------------------- rule 23: other numbers


@pytest.mark.parametrize("kind", [Decimal, Fraction, int])
def test_a_clock_of_another_number_type_gives_float_elapsed_times(kind: type) -> None:
    readings = iter(range(10, 100))
    loop = Loop(range(5), max_epochs=1, clock=lambda: kind(next(readings)))
    elapsed = [loop.state.elapsed for _ in loop]
    assert elapsed == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert {type(value) for value in elapsed} == {float}


# ---------------------------------------------------------------- rule 27: consistent parts


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        # The next deadline of a 1 s period after 6.5 s is 7 s (index 7), never 10**9 s.
        ({"events": {"t": {"every_n_seconds": [1.0, 10**9]}}}, r"not the first one after"),
        ({"events": {"t": {"every_n_seconds": [1.0, 9]}}}, r"not the first one after"),
        # Epoch 2 cannot begin at step 0: epochs 0 and 1 had a batch each at least.
        ({"step": 3, "epoch": 2, "epoch_step": 3}, r"position is inconsistent"),
        ({"step": -1, "epoch": 1, "epoch_step": -1}, r"position is inconsistent"),
        # An epoch of 10 batches does not end on its third.
        ({"epoch_step": 2, "step": 12, "epoch": 1, "epoch_finished": True}, r"ending an epoch"),
    ],
)
def test_a_state_dict_whose_parts_do_not_fit_together_is_refused(
    changes: dict[str, Any], match: str
) -> None:
    loop, clock = fresh()
    before = loop.state, loop.state_dict()
    with pytest.raises(ValueError, match=match):
        loop.load_state_dict(saved(**changes))
    assert (loop.state, loop.state_dict()) == before
    assert len(drive(loop, clock)) == 30


def test_a_deadline_saved_behind_the_elapsed_time_is_kept_and_fires_once() -> None:
    """With a sync, deadlines lag up to one agreement: an earlier index is valid."""
    loop, clock = fresh()
    loop.load_state_dict(saved(events={"t": {"every_n_seconds": [1.0, 3]}}))
    records = drive(loop, clock, lambda step: 0.5)
    # 6.5 s restored: the 3 s deadline is due at once; then every 1 s (two steps).
    assert fired_steps(records, "t")[:3] == [13, 14, 16]


# ---------------------------------------------------------------- rule 25: the last epoch


class LongerThanLen:
    """Says 3 batches and yields 5."""

    def __len__(self) -> int:
        return 3

    def __iter__(self) -> Iterator[int]:
        return iter(range(5))


@pytest.mark.parametrize("limits", [{"max_epochs": 1}, {"max_steps": 3}, {"max_epochs": 2}])
def test_the_last_epoch_is_checked_against_len_as_every_other_is(limits: dict[str, Any]) -> None:
    """After an epoch's last batch, iterating on raises: the data gave more than its
    len(). The run's last epoch too: on the last batch the run ends on an epoch end."""
    seen: list[tuple[int, frozenset[Any]]] = []
    loop = Loop(LongerThanLen(), **limits)
    with pytest.raises(ValueError, match=r"more batches in epoch 0 than its len\(\) = 3"):
        collect(loop, seen)
    assert [batch for batch, _ in seen] == [0, 1, 2]
    assert EPOCH_END in seen[-1][1]  # the batch was yielded, with its events
    assert (TRAINING_END in seen[-1][1]) == (
        "max_epochs" not in limits or limits["max_epochs"] == 1
    )


def test_a_run_cut_inside_its_last_epoch_does_not_check_the_rest() -> None:
    assert [batch for batch, _ in Loop(LongerThanLen(), max_steps=2)] == [0, 1]


# ---------------------------------------------------------------- rule 24: errors in order


def failing_after(*items: str) -> Iterator[str]:
    yield from items
    raise OSError("corrupt record")


class Failing:
    """Re-iterable, unknown length: ``items`` then an OSError, every epoch."""

    def __init__(self, *items: str) -> None:
        self.items = items

    def __iter__(self) -> Iterator[str]:
        return failing_after(*self.items)


@pytest.mark.parametrize(
    ("make", "sync"),
    [
        (lambda: failing_after("a", "b", "c"), False),
        (lambda: Failing("a", "b", "c"), False),
        (lambda: failing_after("a", "b", "c"), True),
        (lambda: Failing("a", "b", "c"), True),
    ],
)
def test_an_error_of_the_data_met_while_looking_ahead_comes_after_the_batches_before_it(
    make: Any, sync: bool
) -> None:
    seen: list[tuple[str, frozenset[Any]]] = []
    loop = Loop(make(), max_steps=10, sync=ThreadSync(1, every_n_steps=4) if sync else None)
    with pytest.raises(OSError, match="corrupt record"):
        collect(loop, seen)
    assert [batch for batch, _ in seen] == ["a", "b", "c"]
    assert not any(EPOCH_END in events for _, events in seen)  # the error is no end of data


# ---------------------------------------------------------------- rule 28: the look-ahead


class Counted:
    """A one-shot stream of ints that counts what was taken from it."""

    def __init__(self, length: int | None = None) -> None:
        self.source = itertools.count() if length is None else iter(range(length))
        self.taken = 0

    def __iter__(self) -> Counted:
        return self

    def __next__(self) -> int:
        value = next(self.source)
        self.taken += 1
        return value


@pytest.mark.parametrize("every_n_steps", [4, 100, 2**62 - 1])
def test_the_look_ahead_of_an_agreement_reads_no_batch_the_run_cannot_use(
    every_n_steps: int,
) -> None:
    stream = Counted()
    loop = Loop(stream, max_steps=3, sync=ThreadSync(1, every_n_steps=every_n_steps))
    assert [batch for batch, _ in loop] == [0, 1, 2]
    assert stream.taken == 3
    assert next(stream) == 3


@pytest.mark.parametrize("every_n_steps", [1, 3, 4, 100])
def test_equal_one_shot_data_gives_the_trace_it_gives_without_a_sync(every_n_steps: int) -> None:
    def trace(sync: ThreadSync | None) -> list[frozenset[Any]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LoopWarning)
            return [events for _, events in Loop(iter(range(3)), max_steps=3, sync=sync)]

    assert trace(ThreadSync(1, every_n_steps=every_n_steps)) == trace(None)
    assert trace(None)[-1] == {TRAINING_END}


# ---------------------------------------------------------------- rule 22: the step bound


class Enormous:
    """Epochs of 2**62 - 1 batches that resume anywhere at once."""

    def __len__(self) -> int:
        return 2**62 - 1

    def __iter__(self) -> Iterator[int]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[int]:
        return iter(range(start, 2**62 - 1))


def test_a_run_without_max_steps_ends_on_the_last_step_below_the_bound() -> None:
    state = Loop(Enormous(), max_seconds=1000.0).state_dict()
    state.update(step=2**62 - 3, epoch=0, epoch_step=2**62 - 3)
    loop = Loop(Enormous(), max_seconds=1000.0, clock=ManualClock())
    loop.load_state_dict(state)
    steps = [(loop.state.step, events) for _, events in loop]
    assert [step for step, _ in steps] == [2**62 - 2, 2**62 - 1]
    assert TRAINING_END in steps[-1][1]
    assert EPOCH_END in steps[0][1]  # epoch 0 has 2**62 - 1 batches: 0 .. 2**62 - 2
    again = Loop(Enormous(), max_seconds=1000.0)
    again.load_state_dict(json.loads(json.dumps(loop.state_dict())))  # within the bound
    assert list(again) == []


# ---------------------------------------------------------------- rule 12: one-shot data


class IteratorWithFreshPasses:
    """Has ``__next__``, but ``iter()`` gives a fresh pass: re-iterable, not one-shot."""

    def __init__(self) -> None:
        self.position = iter(range(3))

    def __next__(self) -> int:
        return next(self.position)

    def __iter__(self) -> Iterator[int]:
        return iter(range(3))


def test_data_is_one_shot_only_when_iter_gives_the_data_itself() -> None:
    batches = [batch for batch, _ in Loop(IteratorWithFreshPasses(), max_epochs=2)]
    assert batches == [0, 1, 2, 0, 1, 2]


def test_messages_count_batches_in_words() -> None:
    class Short:
        def __len__(self) -> int:
            return 3

        def __iter__(self) -> Iterator[int]:
            return iter(range(1))

    with pytest.raises(ValueError, match=r"yielded 1 batch in epoch 0, fewer than"):
        list(Loop(Short(), max_epochs=1))


def test_a_stream_cut_into_epochs_of_another_length_is_refused_before_it_is_read() -> None:
    first = Loop(iter(range(100)), epoch_length=4, max_epochs=3)
    for _ in first:
        if first.state.step == 5:
            break
    state = json.loads(json.dumps(first.state_dict()))
    stream = iter(range(100))
    second = Loop(stream, epoch_length=5, max_epochs=3)
    with pytest.raises(ValueError, match=r"inside epoch 1, whose length was 4, .* have 5"):
        second.load_state_dict(state)
    assert next(stream) == 0  # nothing was taken from it


def test_a_process_whose_clock_lags_loads_its_own_state_dict_with_a_sync() -> None:
    """With a sync, every_n_seconds deadlines follow the agreed elapsed time (the largest):
    a process saved while behind it resumes from its own state dict, and both processes
    go on firing on the same steps."""

    def run_two(states: dict[int, Any] | None) -> dict[Any, Any]:
        sync = ThreadSync(2, every_n_steps=4, timeout=10.0)
        out: dict[Any, Any] = {}

        def process(rank: int) -> None:
            clock = ManualClock(tick=1.0)
            loop = Loop(
                range(100),
                max_steps=40,
                sync=sync,
                clock=clock,
                events={"Checkpoint": Event(every_n_seconds=10.0)},
            )
            if states is not None:
                loop.load_state_dict(states[rank])
            fired = []
            for _, events in loop:
                if loop.state.step == 0 and rank == 1:
                    clock.advance(2.0)  # a slow first step on rank 1 only
                if "Checkpoint" in events:
                    fired.append(loop.state.step)
                    if states is None and rank not in out:
                        out[rank] = json.loads(json.dumps(loop.state_dict()))
            out[("fired", rank)] = fired

        threads = [threading.Thread(target=process, args=(rank,)) for rank in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30.0)
        return out

    first = run_two(None)
    assert first[0]["elapsed"] < 10.0 <= first[1]["elapsed"]  # rank 0 lags the agreement
    assert first[0]["events"] == first[1]["events"]
    resumed = run_two({0: first[0], 1: first[1]})
    assert resumed[("fired", 0)] == resumed[("fired", 1)]
    saved_at = first[("fired", 0)][0]
    assert resumed[("fired", 0)] == [s for s in first[("fired", 0)] if s > saved_at]


# ---------------------------------------------------------------- a review of the above


@pytest.mark.parametrize("data", [list(range(5)), iter([])])
def test_a_loop_that_ended_before_its_first_step_still_has_a_state(data: Any) -> None:
    """Closed before its first step (a ``with`` block left early), or over an empty
    stream: the state says so instead of dividing by a total of 0."""
    loop = Loop(data, max_steps=5)
    if isinstance(data, list):
        loop.close()
    else:
        with pytest.warns(LoopWarning, match="no batch left"):
            assert list(loop) == []
    state = loop.state
    assert (state.step, state.total_steps, state.progress) == (-1, 0, None)
    assert len(loop) == 0


def test_what_a_sync_reads_of_the_state_while_a_step_is_decided_is_that_step() -> None:
    """The C accelerator puts the quiet position on the run before a decision, so that
    code called back from it (a sync's combine here) never sees, nor leaves, an older one."""
    seen: list[int] = []

    class LoggingSync(ThreadSync):
        def combine(self, flags: Any) -> Any:
            seen.append(loop.state.step)
            return super().combine(flags)

    loop = Loop(list(range(12)), max_steps=12, sync=LoggingSync(1, every_n_steps=4))
    # Read on agreement steps only: a read on every step would settle every quiet step.
    in_body = [
        (batch, loop.state.step, loop.state_dict()["step"]) for batch, _ in loop if batch in (3, 7)
    ]
    assert seen == [-1, 3, 7, 11]
    assert in_body == [(3, 3, 3), (7, 7, 7)]


def test_a_stream_cut_into_epochs_that_ends_on_an_epoch_end_resumes_into_nothing() -> None:
    def make() -> Loop[int]:
        return Loop(iter(range(6)), epoch_length=3, max_steps=100)

    first = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoopWarning)
        states = [json.loads(json.dumps(first.state_dict())) for _ in first]
        second = make()
        second.load_state_dict(states[-1])
        assert list(second) == []
    third = make()
    third.load_state_dict(second.state_dict())  # its own state dict loads
    assert list(third) == []


@pytest.mark.parametrize("kind", [Decimal, Fraction])
def test_readings_of_another_number_type_that_go_back_count_as_no_time(kind: type) -> None:
    readings = iter(kind(text) for text in ["0", "1", "2", "1.5", "3", "4"])
    loop = Loop(list(range(6)), max_steps=6, clock=lambda: next(readings))
    elapsed = []
    for batch, _ in loop:
        elapsed.append(loop.state.elapsed)
        if batch == 1:
            loop.request_stop()
    assert elapsed == [1.0, 2.0, 2.0]
    assert {type(value) for value in elapsed} == {float}


class Seconds(float):
    """A float subclass, as numpy.float64 is."""


@pytest.mark.parametrize("kind", [Seconds, int, Fraction])
def test_max_seconds_ends_a_run_on_the_same_step_whatever_number_type_the_clock_gives(
    kind: type,
) -> None:
    durations = [2, 0, 2, 2, 2, 2, 2, 2]

    def ended(convert: Any) -> list[tuple[int, float]]:
        times = iter(itertools.accumulate([0, 0, *durations]))
        loop = Loop(list(range(20)), max_seconds=5, clock=lambda: convert(next(times)))
        return [(loop.state.step, loop.state.elapsed) for _ in loop]

    assert ended(kind) == ended(float)


def test_a_state_dict_with_more_pending_times_than_an_event_can_have_is_refused() -> None:
    loop, _ = fresh()
    with pytest.raises(ValueError, match=r"\['at_time_pending'\] must be a list of at most"):
        loop.load_state_dict(saved(events={"t": {"at_time_pending": [1.0] * (2**20 + 1)}}))
