"""The optional C accelerator (``dloop._speedups``) behaves exactly like the pure path.

Every other core test runs through whichever path the environment selects (tox runs the
suite twice: with the accelerator, and with ``DLOOP_PURE_PYTHON=1``). These tests run both
paths side by side in one process on the same random runs and compare everything a user
can see: batches, events, ``loop.state`` and ``state_dict()`` at every step, errors, and
what happens after a break, a stop request, ``close()`` and an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import subprocess
import sys
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import dloop._run
from dloop import Event, Loop, LoopState
from dloop.testing import ManualClock, ThreadSync

speedups: Any
try:
    from dloop import _speedups as speedups
except ImportError:
    speedups = None

needs_speedups = pytest.mark.skipif(
    speedups is None and os.environ.get("DLOOP_EXPECT_SPEEDUPS") != "1",
    reason="dloop._speedups is not built here (set DLOOP_EXPECT_SPEEDUPS=1 to require it)",
)


class Boom(Exception):
    """An error raised by test data or a test clock."""


@dataclass
class Faults:
    """Where a run's data or clock fails, and where its body acts."""

    data_error_at: int | None = None  # the data raises when asked for this batch index
    data_stop_at: int | None = None  # the data ends early (StopIteration) at this index
    clock_error_at: int | None = None  # the clock raises on this reading
    clock_stop_at: int | None = None  # the clock raises StopIteration on this reading
    clock_nan_at: int | None = None  # this reading is NaN (rule 23)
    clock_back_at: int | None = None  # from this reading on, the clock is 3 s behind (rule 23)
    clock_jump_at: int | None = None  # from this reading on, 5e9 s ahead (a tiny period fails)
    data_more_at: int | None = None  # the data yields one batch more than its len in this epoch
    sync_error_at: int | None = None  # the sync's combine raises on this call
    stop_in_body_of: int | None = None
    close_in_body_of: int | None = None
    break_in_body_of: int | None = None


class Data:
    """Sized, re-iterable data whose iterators can fail as ``faults`` says."""

    def __init__(self, length: int, faults: Faults, *, varying: bool = False) -> None:
        self.length = length
        self.faults = faults
        self.varying = varying  # odd epochs are one batch longer (rule 25)
        self.epochs: list[int] = []

    def __len__(self) -> int:
        epoch = self.epochs[-1] if self.epochs else 0
        return self.length + (epoch % 2 if self.varying else 0)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epochs[-1] if self.epochs else -1
        more = 1 if epoch == self.faults.data_more_at else 0
        for index in range(len(self) + more):
            if index == self.faults.data_error_at:
                raise Boom(f"data {index}")
            if index == self.faults.data_stop_at:
                return
            yield (epoch, index)


class FaultyClock(ManualClock):
    """A ManualClock that fails on chosen readings."""

    __slots__ = ("faults", "readings")

    def __init__(self, faults: Faults, tick: float) -> None:
        super().__init__(tick=tick)
        self.faults = faults
        self.readings = 0

    def __call__(self) -> float:
        reading = self.readings
        self.readings += 1
        if reading == self.faults.clock_error_at:
            raise Boom(f"clock {reading}")
        if reading == self.faults.clock_stop_at:
            raise StopIteration
        now = super().__call__()
        if reading == self.faults.clock_nan_at:
            return math.nan
        back_at = self.faults.clock_back_at
        if back_at is not None and reading >= back_at:
            return now - 3.0
        jump_at = self.faults.clock_jump_at
        if jump_at is not None and reading >= jump_at:
            return now + 5e9
        return now


class FaultySync:
    """Wraps a sync whose ``combine`` raises on its ``at``-th call (an error that reaches
    ``_decide`` after it stored the step, following quiet steps)."""

    def __init__(self, inner: Any, at: int) -> None:
        self.inner = inner
        self.every_n_steps = inner.every_n_steps
        self.at = at
        self.calls = 0

    def combine(self, flags: Sequence[int]) -> Sequence[int]:
        self.calls += 1
        if self.calls - 1 == self.at:
            raise Boom(f"combine {self.at}")
        result: Sequence[int] = self.inner.combine(flags)
        return result


class OtherProcessSync:
    """A sync for one process that answers as if a second process took part whose data of
    every pass ends ``offset`` batches earlier (``uneven="shortest"``) or later
    (``"longest"``), and whose clock is ``ahead`` microseconds ahead (rule 28)."""

    CAP = 2**62 - 1

    def __init__(self, every_n_steps: int, offset: int, ahead: int, *, longest: bool) -> None:
        self.every_n_steps = every_n_steps
        self.offset = offset
        self.ahead = ahead
        self.longest = longest
        self.run: Any = None
        self.other_last = -1  # where the other process's current pass ends, as a step

    def combine(self, flags: Sequence[int]) -> Sequence[int]:
        step = self.run.step  # the step being decided, or the one before an epoch opens
        count = flags[4] if self.longest else self.CAP - flags[4]
        if count > 0 or step > self.other_last:
            # The other's pass ends `offset` from ours (when ours is known from here).
            self.other_last = step + count + (self.offset if self.longest else -self.offset)
        theirs = max(0, self.other_last - step)
        other = list(flags)
        other[1] += self.ahead
        other[4] = theirs if self.longest else self.CAP - theirs
        return [max(mine, their) for mine, their in zip(flags, other, strict=True)]


def state_tuple(state: LoopState) -> tuple[Any, ...]:
    return dataclasses.astuple(state)


@contextlib.contextmanager
def path(pure: bool) -> Iterator[None]:
    """Loops made inside iterate in pure Python, or with the accelerator (whatever
    ``DLOOP_PURE_PYTHON`` says)."""
    saved = dloop._run._speedups
    dloop._run._speedups = None if pure else speedups
    try:
        yield
    finally:
        dloop._run._speedups = saved


def trace(
    make: Callable[[], Loop[Any]], faults: Faults, pure: bool, look_every: int
) -> tuple[list[Any], type[Loop[Any]] | None]:
    """Everything visible while iterating ``make()`` on one path, twice over (after a
    break or an error the second ``for`` continues or ends the run). The body looks at
    ``loop.state`` on every ``look_every``-th batch only, so that the accelerator's
    position is also checked where it was not brought up to date by a look."""
    with path(pure):
        loop = make()
        iterator = iter(loop)
    kind: type[Any] = type(iterator)
    seen: list[Any] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trace_rounds(loop, faults, look_every, seen)
    seen.append(("warnings", [(w.category.__name__, str(w.message)) for w in caught]))
    assert iter(loop) is iterator
    return seen, kind


def _trace_rounds(loop: Loop[Any], faults: Faults, look_every: int, seen: list[Any]) -> None:
    for _round in range(2):
        try:
            for batch, events in loop:
                assert len(seen) < 1_000, "the run does not end"
                seen.append(("batch", batch, sorted(map(repr, events))))
                if len(seen) % look_every:
                    continue
                state = loop.state
                seen.append(("state", state_tuple(state), loop.state_dict(), repr(loop)))
                if state.step == faults.stop_in_body_of:
                    loop.request_stop()
                if state.step == faults.close_in_body_of:
                    loop.close()
                if state.step == faults.break_in_body_of:
                    break
        except (Boom, ValueError, TypeError, RuntimeError, StopIteration) as error:
            cause = error.__cause__
            seen.append(("error", type(error).__name__, str(error), type(cause).__name__))
        seen.append(("after", state_tuple(loop.state), repr(loop)))


STEP_EVENTS = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.one_of(
        st.builds(Event, every_n_steps=st.integers(1, 7)),
        st.builds(Event, at_step=st.integers(0, 40)),
        st.builds(Event, every_n_epochs=st.integers(1, 3)),
        st.builds(Event, every_n_seconds=st.sampled_from([0.5, 1.0, 2.25])),
        st.builds(Event, at_time=st.sampled_from([0.0, 1.0, 3.5])),
        st.builds(Event, at_step=st.just(2**62 - 1), every_n_steps=st.just(2**62 - 1)),
        st.builds(Event, every_n_seconds=st.just(1e-6)),
        st.builds(
            Event, condition_function=st.sampled_from([lambda s: s.step % 5 == 2, lambda s: False])
        ),
    ),
    max_size=4,
)
MAYBE_STEP = st.none() | st.integers(0, 40)
RARELY_STEP = st.one_of(st.none(), st.none(), st.integers(0, 40))
FAULT_KINDS = (
    "data_error_at",
    "data_stop_at",
    "clock_error_at",
    "clock_stop_at",
    "clock_nan_at",
    "clock_back_at",
    "clock_jump_at",
    "data_more_at",
    "sync_error_at",
)


def make_faults(kind: str | None, at: int, **body: int | None) -> Faults:
    """At most one fault of the data or the clock, and the body's actions."""
    faults = Faults(**body)
    if kind is not None:
        setattr(faults, kind, at)
    return faults


@needs_speedups
@given(
    length=st.integers(1, 12),
    max_epochs=st.none() | st.integers(1, 5),
    max_steps=st.none() | st.integers(1, 30),
    max_seconds=st.none() | st.sampled_from([2.0, 5.5]),
    events=STEP_EVENTS,
    tick=st.sampled_from([0.0, 0.25, 0.5]),
    sync_every=st.none() | st.integers(1, 4),
    other=st.sampled_from([None, ("shortest", 2), ("longest", 3), ("shortest", 0)]),
    varying=st.booleans(),
    epoch_length=st.none() | st.integers(1, 14),
    faults=st.builds(
        make_faults,
        kind=st.sampled_from([None, *FAULT_KINDS]),
        at=st.integers(0, 40),
        stop_in_body_of=RARELY_STEP,
        close_in_body_of=RARELY_STEP,
        break_in_body_of=RARELY_STEP,
    ),
    resume_at=MAYBE_STEP,
    look_every=st.sampled_from([1, 2, 3, 1_000]),
)
# Data that ends early after quiet steps nobody looked at: the error counts the batches.
@example(
    length=5,
    max_epochs=1,
    max_steps=None,
    max_seconds=None,
    events={},
    tick=0.0,
    sync_every=None,
    other=None,
    varying=False,
    epoch_length=7,
    faults=Faults(),
    resume_at=None,
    look_every=1_000,
)
# A combine that fails after quiet steps: the run is left at the step being decided.
@example(
    length=10,
    max_epochs=1,
    max_steps=None,
    max_seconds=None,
    events={},
    tick=0.25,
    sync_every=3,
    other=None,
    varying=False,
    epoch_length=None,
    faults=Faults(sync_error_at=2),
    resume_at=None,
    look_every=1_000,
)
def test_the_c_path_and_the_pure_path_are_indistinguishable(
    length: int,
    max_epochs: int | None,
    max_steps: int | None,
    max_seconds: float | None,
    events: dict[Hashable, Event],
    tick: float,
    sync_every: int | None,
    other: tuple[str, int] | None,
    varying: bool,
    epoch_length: int | None,
    faults: Faults,
    resume_at: int | None,
    look_every: int,
) -> None:
    if max_epochs is None and max_steps is None:
        max_steps = 25  # max_seconds alone may never end with a clock that does not move

    def make_state() -> dict[str, Any] | None:
        if resume_at is None:
            return None
        loop = Loop(list(range(epoch_length or length)), max_steps=resume_at + 1)
        for _ in loop:
            pass
        return loop.state_dict()

    saved_state = make_state()

    def make() -> Loop[Any]:
        sync: Any = None
        uneven = "shortest"
        if sync_every is not None and other is not None:
            uneven, offset = other
            sync = OtherProcessSync(sync_every, offset, ahead=250_000, longest=uneven == "longest")
        elif sync_every is not None:
            sync = ThreadSync(1, every_n_steps=sync_every)
        if sync is not None and faults.sync_error_at is not None:
            sync = FaultySync(sync, faults.sync_error_at)
        loop = Loop(
            Data(length, faults, varying=varying),
            max_epochs=max_epochs,
            max_steps=max_steps,
            max_seconds=max_seconds,
            events=events,
            epoch_length=epoch_length,
            clock=FaultyClock(faults, tick),
            sync=sync,
            uneven=uneven,
        )
        inner = sync.inner if isinstance(sync, FaultySync) else sync
        if isinstance(inner, OtherProcessSync):
            inner.run = loop._run
        if saved_state is not None:
            with contextlib.suppress(ValueError):  # a state this loop cannot resume from
                loop.load_state_dict(saved_state)
        return loop

    fast, fast_kind = trace(make, faults, pure=False, look_every=look_every)
    pure, pure_kind = trace(make, faults, pure=True, look_every=look_every)
    assert fast_kind is speedups.Stepper
    assert pure_kind is not speedups.Stepper
    assert fast == pure


@needs_speedups
def test_sized_data_runs_in_c_and_data_without_length_in_python() -> None:
    def unsized() -> Iterator[int]:
        yield 1

    with path(pure=False):
        assert type(iter(Loop([1, 2], max_epochs=1))) is speedups.Stepper
        assert type(iter(Loop(unsized(), max_steps=1))).__name__ == "generator"


@needs_speedups
def test_re_entering_the_iterator_is_an_error_like_a_running_generator() -> None:
    holder: list[Loop[int]] = []

    def clock() -> float:
        if holder:
            next(iter(holder[0]))
        return 0.0

    for pure in (False, True):
        with path(pure):
            loop = Loop([1, 2, 3], max_epochs=1, clock=clock)
            iterator = iter(loop)
        next(iterator)
        holder[:] = [loop]
        with pytest.raises(ValueError, match="already executing"):
            next(iterator)
        holder.clear()


@needs_speedups
def test_a_freed_c_iterator_frees_its_run_and_data() -> None:
    data = Data(3, Faults())
    with path(pure=False):
        loop = Loop(data, max_epochs=2)
        assert type(iter(loop)) is speedups.Stepper
    next(iter(loop))
    run = weakref.ref(loop._run)
    del loop
    gc.collect()
    assert run() is None


def test_dloop_pure_python_selects_the_generator() -> None:
    script = "import dloop; print(type(iter(dloop.Loop([1], max_steps=1))).__name__)"
    env = {**os.environ, "DLOOP_PURE_PYTHON": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "generator"
