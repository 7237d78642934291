"""Rules 22-27 as properties: ``Loop`` against a small model, over random configurations,
random clock readings (going back, not finite, a slow first step) and random one-shot
streams, with stop requests, ``max_seconds``, a sync and resumes.

The model (``expected``) lays out every batch the data can give as (epoch, epoch_step,
batch, last of its epoch, last of the data) and walks it with the rules, straight from
SPEC: no look-ahead, no heaps, no caches. With a sync, time events and stop requests take
effect on agreement steps only (rule 20). Where ``max_seconds`` ends a run depends on the
step-time estimate; the model takes that step from the loop and checks it against the
bounds of rules 11 and 26 instead: the estimate is a median of mean step durations, each
between the shortest and the longest step measured, and the first step's body is never
measured.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from _core_reference import (
    EPOCH_END,
    EPOCH_START,
    INTERRUPTED,
    TRAINING_END,
    Record,
    as_tuple,
    drive,
    reference_run,
)
from hypothesis import given
from hypothesis import strategies as st

from dloop import Event, Loop, LoopWarning
from dloop.testing import ManualClock, ThreadSync

KINDS = ("list", "varying", "unsized", "stream", "stream-cut")


class EpochData:
    """Re-iterable data whose epoch ``e`` has ``lengths[e % len(lengths)]`` batches
    ``(e, index)``; sized or not."""

    def __init__(self, lengths: Sequence[int], *, sized: bool) -> None:
        self.lengths = list(lengths)
        self.epoch = 0
        self.sized = sized

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def length(self, epoch: int) -> int:
        return self.lengths[epoch % len(self.lengths)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, index) for index in range(self.length(epoch))])


class SizedEpochData(EpochData):
    def __len__(self) -> int:
        return self.length(self.epoch)


class ReadingClock:
    """Returns ``readings[i]`` on its i-th call (the origin, then one per step)."""

    def __init__(self, readings: Sequence[float]) -> None:
        self.readings = list(readings)
        self.calls = 0

    def __call__(self) -> float:
        reading = self.readings[self.calls] if self.calls < len(self.readings) else math.inf
        self.calls += 1
        return reading


class Slot(NamedTuple):
    """One batch the data can give, as the model lays it out."""

    epoch: int
    epoch_step: int
    batch: object
    epoch_last: bool
    data_last: bool


@dataclass
class Case:
    kind: str
    lengths: list[int]
    epoch_length: int | None
    max_epochs: int | None
    max_steps: int | None
    events: dict[Hashable, Event]
    readings: list[float]
    stop_in_body_of: int | None
    max_seconds: float | None = None
    sync_every: int | None = None
    made: list[Any] = field(default_factory=list, repr=False)

    @property
    def one_shot(self) -> bool:
        return self.kind.startswith("stream")

    def data(self) -> Any:
        made: Any
        if self.kind == "list":
            made = list(range(self.lengths[0]))
        elif self.kind == "varying":
            made = SizedEpochData(self.lengths, sized=True)
        elif self.kind == "unsized":
            made = EpochData(self.lengths, sized=False)
        else:
            made = iter(range(self.lengths[0]))
        self.made.append(made)
        return made

    def loop(self, clock: Any) -> Loop[Any]:
        return Loop(
            self.data(),
            max_epochs=self.max_epochs,
            max_steps=self.max_steps,
            max_seconds=self.max_seconds,
            epoch_length=self.epoch_length if self.kind == "stream-cut" else None,
            events=self.events,
            clock=clock,
            sync=None if self.sync_every is None else ThreadSync(1, every_n_steps=self.sync_every),
        )

    def agreed(self, step: int) -> bool:
        """Whether time and stop requests are decided on ``step`` (every step without a
        sync; agreement steps with one)."""
        return self.sync_every is None or (step + 1) % self.sync_every == 0

    def slots(self) -> Iterator[Slot]:
        """Every batch the data can give, in order (re-iterable data: a few epochs)."""
        if self.one_shot:
            total = self.lengths[0]
            cut = self.epoch_length if self.kind == "stream-cut" else None
            for index in range(total):
                epoch, epoch_step = divmod(index, cut) if cut else (0, index)
                epoch_last = cut is not None and epoch_step == cut - 1
                yield Slot(epoch, epoch_step, index, epoch_last, index == total - 1)
            return
        for epoch in range(40):
            length = self.lengths[0 if self.kind == "list" else epoch % len(self.lengths)]
            for index in range(length):
                batch = index if self.kind == "list" else (epoch, index)
                yield Slot(epoch, index, batch, index == length - 1, False)


class Expected(NamedTuple):
    records: list[Record]
    error: str | None
    warned: bool
    leftover: object
    """For a stream: what ``next(stream)`` gives after the run (None when exhausted)."""


def expected(case: Case, time_stop: int | None = None) -> Expected:
    """The run ``case`` should give, rule by rule; ``max_seconds`` ends it on step
    ``time_stop`` (see ``check_time_stop``)."""
    readings = case.readings
    if not math.isfinite(readings[0]):
        return Expected([], "ValueError", False, None)
    origin = now = readings[0]
    seconds_k = {key: 1 for key, event in case.events.items() if event.every_n_seconds}
    pending = {
        key: set(as_tuple(event.at_time))
        for key, event in case.events.items()
        if event.at_time is not None
    }
    records: list[Record] = []
    slots = list(case.slots())
    if not slots:
        return Expected([], None, True, None)
    for step, slot in enumerate(slots):
        reading = readings[step + 1] if step + 1 < len(readings) else math.inf
        if not math.isfinite(reading):
            return Expected(records, "ValueError", False, None)
        now = max(now, reading)  # a reading that goes back counts as no time passing
        elapsed = now - origin
        agreed = case.agreed(step)
        fired: set[Hashable] = set()
        if slot.epoch_step == 0:
            fired.add(EPOCH_START)
        for key, event in case.events.items():
            if event.every_n_steps and (step + 1) % event.every_n_steps == 0:
                fired.add(key)
            if event.at_step is not None and step in as_tuple(event.at_step):
                fired.add(key)
            if event.every_n_seconds is not None and agreed:
                period = event.every_n_seconds
                if elapsed >= seconds_k[key] * period:
                    fired.add(key)
                    while seconds_k[key] * period <= elapsed:
                        seconds_k[key] += 1
            if event.at_time is not None and agreed:
                due = {time for time in pending[key] if time <= elapsed}
                if due:
                    fired.add(key)
                    pending[key] -= due
        stopped = agreed and case.stop_in_body_of is not None and step > case.stop_in_body_of
        by_limit = (
            stopped
            or step == time_stop
            or (case.max_steps is not None and step + 1 >= case.max_steps)
        )
        last_epoch = case.max_epochs is not None and slot.epoch + 1 >= case.max_epochs
        # Without a cut, the end of a stream is the end of its only epoch; it is known only
        # by reading on, which the loop does not do on a step a limit ends.
        epoch_end = slot.data_last and not by_limit if case.kind == "stream" else slot.epoch_last
        data_end = slot.data_last and not by_limit and not (epoch_end and last_epoch)
        if epoch_end:
            fired.add(EPOCH_END)
            for key, event in case.events.items():
                if event.every_n_epochs and (slot.epoch + 1) % event.every_n_epochs == 0:
                    fired.add(key)
        if stopped:
            fired.add(INTERRUPTED)
        final = by_limit or (epoch_end and last_epoch) or slot.data_last
        if final:
            fired.add(TRAINING_END)
        records.append(
            Record(step, slot.epoch, slot.epoch_step, elapsed, slot.batch, frozenset(fired))
        )
        if final:
            leftover = None
            if case.one_shot and not slot.data_last and case.sync_every is None:
                leftover = slots[step + 1].batch
            return Expected(records, None, data_end, leftover)
    raise AssertionError("the model needs a limit within its slots")


@st.composite
def events(draw: st.DrawFn) -> Event:
    triggers: dict[str, Any] = {}
    if draw(st.booleans()):
        triggers["every_n_steps"] = draw(st.integers(1, 6))
    if draw(st.booleans()):
        triggers["at_step"] = draw(st.lists(st.integers(0, 25), min_size=1, max_size=3))
    if draw(st.booleans()):
        triggers["every_n_epochs"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        triggers["every_n_seconds"] = draw(st.integers(1, 12)) / 4
    if draw(st.booleans()):
        quarters = draw(st.lists(st.integers(1, 60), min_size=1, max_size=3))
        triggers["at_time"] = [quarter / 4 for quarter in quarters]
    if not triggers:
        triggers["every_n_steps"] = draw(st.integers(1, 6))
    return Event(**triggers)


@st.composite
def clock_readings(draw: st.DrawFn, steps: int) -> list[float]:
    """The origin and one reading per step: quarters that mostly grow, sometimes go back,
    with a slow first step now and then, and rarely one reading that is not finite."""
    now = draw(st.integers(-400, 400)) / 4
    readings = [now]
    for index in range(steps):
        if index == 1 and draw(st.booleans()):
            now += draw(st.integers(20, 200)) / 4  # a first step that compiles
        else:
            now += draw(st.integers(-8, 12)) / 4
        readings.append(now)
    if draw(st.integers(0, 9)) == 0:
        readings[draw(st.integers(0, steps))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf])
        )
    return readings


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(KINDS))
    if kind in ("stream", "stream-cut"):
        lengths = [draw(st.integers(0, 30))]
    elif kind == "list":
        lengths = [draw(st.integers(1, 7))]
    else:
        lengths = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4))
    max_epochs = draw(st.none() | st.integers(1, 4))
    max_steps = draw(st.none() | st.integers(1, 30))
    if kind == "stream" and max_steps is None:
        max_epochs = 1  # a stream without a cut gives one epoch
    if max_epochs is None and max_steps is None:
        max_steps = draw(st.integers(1, 30))
    return Case(
        kind=kind,
        lengths=lengths,
        epoch_length=draw(st.integers(1, 6)),
        max_epochs=max_epochs,
        max_steps=max_steps,
        events=draw(st.dictionaries(st.sampled_from("abc"), events(), max_size=3)),
        readings=draw(clock_readings(40)),
        stop_in_body_of=draw(st.none() | st.integers(0, 30)),
        max_seconds=draw(st.none() | st.integers(1, 160).map(lambda quarter: quarter / 4)),
        sync_every=draw(st.none() | st.integers(1, 5)),
    )


def run(case: Case, clock: Any) -> tuple[list[Record], str | None, bool]:
    """Iterate ``case``'s loop: its records, the error it raised and whether it warned."""
    loop = case.loop(clock)
    records: list[Record] = []
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for batch, fired in loop:
                state = loop.state
                records.append(
                    Record(state.step, state.epoch, state.epoch_step, state.elapsed, batch, fired)
                )
                if state.step == case.stop_in_body_of:
                    loop.request_stop()
        except (ValueError, TypeError) as raised:
            error = type(raised).__name__
    warned = any(issubclass(warning.category, LoopWarning) for warning in caught)
    return records, error, warned


@given(cases())
def test_the_loop_matches_the_model_at_the_edges(case: Case) -> None:
    records, error, warned = run(case, ReadingClock(case.readings))
    without_time = expected(case)
    time_stop = None
    if case.max_seconds is not None and error is None and records:
        last = records[-1].step
        if len(without_time.records) > last + 1 or without_time.error is not None:
            time_stop = last  # the model would have gone on: max_seconds ended it
        elif (records, warned) != seen(without_time) and (records, warned) == seen(
            expected(case, last)
        ):
            # It ends there anyway; ended by max_seconds, it did not look for the end of
            # a stream that ends on that step too, nor warn of it (rule 24).
            time_stop = last
        elif time_certainly_ends(case, records, last):
            assert (records, warned) == seen(expected(case, last))
    want = expected(case, time_stop) if time_stop is not None else without_time
    assert records == want.records
    assert error == want.error
    assert warned == want.warned
    if case.one_shot and error is None and case.sync_every is None:
        assert next(case.made[-1], None) == want.leftover  # no batch is lost (rule 24)
    assert all(b.elapsed >= a.elapsed for a, b in itertools.pairwise(records))
    if case.max_seconds is not None:
        check_time_stop(case, records, time_stop)


def seen(want: Expected) -> tuple[list[Record], bool]:
    """What a run shows when it ends without an error: its records and whether it warned."""
    return want.records, want.warned


MICROSECOND = 1e-6
"""The resolution of agreed times (a sync carries them as whole microseconds)."""


def measured(case: Case, step: int) -> list[float]:
    """The step durations the estimate at ``step`` can be made of: the bodies of steps
    1 .. step-1 (step j's body lasts from the reading of step j to that of step j+1)."""
    nows = list(itertools.accumulate(case.readings, max))  # readings that go back: no time
    return [nows[j + 2] - nows[j + 1] for j in range(1, step)]


def time_certainly_ends(case: Case, records: Sequence[Record], step: int) -> bool:
    """Whether max_seconds ends the run on ``step`` whatever the estimate (rule 11)."""
    assert case.max_seconds is not None
    horizon = case.sync_every or 1
    shortest = min(measured(case, step), default=0.0)
    return case.agreed(step) and (
        records[step].elapsed + horizon * shortest >= case.max_seconds + horizon * MICROSECOND
    )


def check_time_stop(case: Case, records: Sequence[Record], time_stop: int | None) -> None:
    """Rules 11 and 26, as bounds: a step on which time is decided ends the run exactly
    when its elapsed time plus ``horizon`` expected steps reaches ``max_seconds``, the
    expected step being a median of mean step durations measured from step 1 on: between
    the shortest and the longest of them, and none before two steps were read."""
    assert case.max_seconds is not None
    horizon = case.sync_every or 1
    tolerance = horizon * MICROSECOND if case.sync_every else 0.0
    for record in records:
        step = record.step
        durations = measured(case, step)
        if step == time_stop:
            assert case.agreed(step)
            longest = max(durations, default=0.0)
            assert record.elapsed + horizon * longest >= case.max_seconds - tolerance
        elif case.agreed(step) and record is not records[-1]:  # a step the run went on from
            shortest = min(durations, default=0.0)
            assert record.elapsed + horizon * shortest < case.max_seconds + tolerance


@given(cases(), st.data())
def test_a_resume_at_a_random_step_gives_the_rest_of_the_run_on_streams_too(
    case: Case, data: st.DataObject
) -> None:
    case.readings = [index / 4 for index in range(60)]  # a steady clock: time is not the point
    case.stop_in_body_of = None
    want = expected(case)
    if want.error or len(want.records) < 2:
        return
    after = data.draw(st.integers(0, len(want.records) - 2), label="resume_after")
    first = case.loop(ManualClock())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoopWarning)
        for _ in first:
            if first.state.step == after:
                break
    state = json.loads(json.dumps(first.state_dict()))
    second = case.loop(ManualClock())  # a fresh stream, from its beginning
    second.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoopWarning)
        rest = drive(second, ManualClock())
    assert untimed(case, rest) == untimed(case, want.records[after + 1 :])


def untimed(case: Case, records: list[Record]) -> list[tuple[Any, ...]]:
    """Records without elapsed times and time events, which depend on each run's clock."""
    timed = {
        key
        for key, event in case.events.items()
        if event.every_n_seconds is not None or event.at_time is not None
    }
    return [(r.step, r.epoch, r.epoch_step, r.batch, r.events - timed) for r in records]


@given(
    first=st.integers(0, 240).map(lambda quarter: quarter / 4),
    steady=st.integers(1, 12).map(lambda quarter: quarter / 4),
    max_seconds=st.integers(1, 400).map(lambda quarter: quarter / 4),
    length=st.integers(1, 9),
)
def test_a_slow_first_step_never_rules_the_max_seconds_prediction(
    first: float, steady: float, max_seconds: float, length: int
) -> None:
    def durations(step: int) -> float:
        return first if step == 0 else steady

    clock = ManualClock()
    loop = Loop(range(length), max_seconds=max_seconds, max_epochs=500, clock=clock)
    records = drive(loop, clock, durations)
    assert records == reference_run(
        lambda epoch: list(range(length)),
        max_epochs=500,
        max_seconds=max_seconds,
        durations=durations,
    )
    # The last batch starts less than one steady step past the budget (unless the first
    # step alone spent it), and the run is not stopped while a steady step still fits.
    last = records[-1].elapsed
    assert last < max_seconds + steady or len(records) <= 2
    assert last + steady >= max_seconds or len(records) == 500 * length


@given(
    durations=st.lists(st.integers(1, 12), min_size=60, max_size=60),  # 15 s at least
    max_seconds=st.integers(1, 40).map(lambda quarter: quarter / 4),  # 10 s at most
    sync_every=st.none() | st.integers(1, 5),
)
def test_max_seconds_stops_within_the_bounds_of_the_estimate(
    durations: list[int], max_seconds: float, sync_every: int | None
) -> None:
    """Rules 11 and 26 on their own: random step durations (a slow first one among them),
    with and without a sync (which can stop on agreement steps only, so it looks
    ``every_n_steps`` steps ahead)."""
    readings = [0.0, *itertools.accumulate(quarter / 4 for quarter in durations)]
    case = Case(
        kind="list",
        lengths=[7],
        epoch_length=None,
        max_epochs=100,
        max_steps=None,
        events={},
        readings=readings,
        stop_in_body_of=None,
        max_seconds=max_seconds,
        sync_every=sync_every,
    )
    records, error, _ = run(case, ReadingClock(readings))
    assert error is None
    assert records[-1].elapsed <= readings[-1] - readings[0]  # ended by time, not the clock
    check_time_stop(case, records, records[-1].step)
