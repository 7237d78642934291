"""State dicts: what a loop saves to resume exactly where it was, and their checks."""

from __future__ import annotations

import numbers
import reprlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dloop._schedule import DEADLINE_RATIO_LIMIT, key_id
from dloop._validation import COUNT_LIMIT, MAX_TRIGGER_ITEMS, SECONDS_LIMIT, finite_float

if TYPE_CHECKING:
    from dloop._run import Run

FORMAT = "dloop.Loop"
VERSION = 1

_FIELDS = (
    "format",
    "version",
    "step",
    "epoch",
    "epoch_step",
    "epoch_finished",
    "epoch_length",
    "finished",
    "data_ended",
    "elapsed",
    "step_seconds",
    "events",
    "data",
)

SAVE_DATA = "dloop_state_dict"
"""The data's own hook for its part of the state dict (see ``Loop``): what an adapter
needs beyond the position to reproduce an epoch, such as a shuffling generator's state."""
LOAD_DATA = "dloop_load_state_dict"
"""The data's hook that takes that part back, before the resumed epoch is iterated."""


def state_dict(run: Run[Any]) -> dict[str, Any]:
    """The JSON-ready state of ``run``: "steps 0..step are done"."""
    budget = run.budget
    if run.started:
        # Once iterating, the time until this call counts too (the body of the step so
        # far), on the last step of the run as on any other.
        elapsed = (
            budget.check(budget.clock(), run.now, f"in state_dict() after step {run.step}")
            - budget.start
        )
    else:
        elapsed = run.elapsed()
    started = run.started or run.step >= 0
    return {
        "format": FORMAT,
        "version": VERSION,
        "step": run.step,
        "epoch": run.epoch,
        "epoch_step": run.step - run.epoch_first_step if started else -1,
        "epoch_finished": run.epoch_finished,
        "epoch_length": run.epoch_length(),
        "finished": run.finished_by_limit,
        "data_ended": run.data_ended,
        "elapsed": elapsed,
        "step_seconds": budget.step_seconds,
        "events": run.schedule.time_state() if run.started else dict(run.saved_events),
        "data": _data_state(run),
    }


def _data_state(run: Run[Any]) -> object:
    """The data's own part of a state dict: ``data.dloop_state_dict()``, or None."""
    save = getattr(run.cursor.data, SAVE_DATA, None)
    if callable(save):
        return save()
    return run.saved_data


class _Fields:
    """Reads the fields of a state dict, each checked; errors name the field."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.state = state

    def fail(self, name: str, value: object, expected: str) -> ValueError:
        return ValueError(f"state dict key {name!r} has {reprlib.repr(value)}, expected {expected}")

    def boolean(self, name: str) -> bool:
        value = self.state[name]
        if not isinstance(value, bool):
            raise self.fail(name, value, "a bool")
        return value

    def count(self, name: str, *, minimum: int) -> int:
        value = self.optional_count(name, minimum=minimum, optional=False)
        assert value is not None
        return value

    def optional_count(self, name: str, *, minimum: int, optional: bool = True) -> int | None:
        value = self.state[name]
        if value is None and optional:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not minimum <= int(value) < COUNT_LIMIT
        ):
            expected = f"an int >= {minimum} and < 2**62" + (" or None" if optional else "")
            raise self.fail(name, value, expected)
        return int(value)

    def seconds(self, name: str) -> float:
        value = self.optional_seconds(name, optional=False)
        assert value is not None
        return value

    def optional_seconds(self, name: str, *, optional: bool = True) -> float | None:
        value = self.state[name]
        if value is None and optional:
            return None
        if not _is_time(value):
            expected = "a finite number of seconds >= 0 and < 1e12" + (
                " or None" if optional else ""
            )
            raise self.fail(name, value, expected)
        return float(value)


def load_state_dict(run: Run[Any], state: Mapping[str, Any]) -> None:
    """Check every field of ``state``, then position ``run`` after its last step done.

    Nothing of the run changes unless every check passes; the data's own part goes to
    ``data.dloop_load_state_dict`` last.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state dict must be a mapping, got a {type(state).__name__}")
    missing = [name for name in _FIELDS if name not in state]
    if missing:
        raise ValueError(f"state dict is missing key(s) {missing}; expected {list(_FIELDS)}")
    if state["format"] != FORMAT:
        raise ValueError(f"state dict format {state['format']!r} is not {FORMAT!r}")
    if type(state["version"]) is not int or state["version"] != VERSION:
        raise ValueError(
            f"state dict version {state['version']!r} is not supported by this dloop "
            f"(which reads version {VERSION})"
        )
    fields = _Fields(state)
    step = fields.count("step", minimum=-1)
    epoch = fields.count("epoch", minimum=0)
    epoch_step = fields.count("epoch_step", minimum=-1)
    epoch_finished = fields.boolean("epoch_finished")
    saved_length = fields.optional_count("epoch_length", minimum=1)
    finished = fields.boolean("finished")
    data_ended = fields.boolean("data_ended")
    elapsed = fields.seconds("elapsed")
    step_seconds = fields.optional_seconds("step_seconds")
    if (
        epoch_step > step
        or (step == -1) != (epoch_step == -1)
        or (step == -1 and (epoch_finished or epoch > 0))
        or step - epoch_step < epoch  # every epoch before this one had a batch at least
    ):
        raise ValueError(
            f"state dict position is inconsistent: step={step}, epoch={epoch}, "
            f"epoch_step={epoch_step}, epoch_finished={epoch_finished}"
        )
    if saved_length is not None and (
        epoch_step >= saved_length or (epoch_finished and epoch_step != saved_length - 1)
    ):
        raise ValueError(
            f"state dict position is inconsistent: epoch_step={epoch_step} "
            f"{'ending' if epoch_finished else 'in'} an epoch of "
            f"epoch_length={saved_length} batches"
        )
    events = _checked_events(run, state["events"], elapsed)
    if not epoch_finished and step >= 0:
        _check_epoch_length(run, epoch, epoch_step, saved_length)

    saved_data = state["data"]
    if saved_data is not None:
        load = getattr(run.cursor.data, LOAD_DATA, None)
        if not callable(load):
            raise ValueError(
                "state dict key 'data' holds the state of the data it was saved with (from "
                f"its {SAVE_DATA}(), as dloop_torch.prepare makes), but this loop's data "
                f"{run.cursor.data!r} has no {LOAD_DATA}(): resume over the same kind of data"
            )
        load(saved_data)
    run.saved_data = saved_data
    run.step = step
    run.resumed_step = step
    run.epoch = epoch
    run.epoch_first_step = step - epoch_step
    run.epoch_finished = epoch_finished
    run.saved_epoch_length = saved_length
    run.finished_by_limit = finished
    run.data_ended = data_ended
    run.budget.restore(elapsed, step_seconds)
    run.saved_events = events


def _check_epoch_length(run: Run[Any], epoch: int, epoch_step: int, saved: int | None) -> None:
    """A state saved inside an epoch resumes only over epochs of the length it had.

    Checked here against ``epoch_length=`` (a one-shot stream's cut too, before the
    stream is read) and against ``len(data)`` of data without ``set_epoch`` (whose length
    cannot depend on the epoch); otherwise, and with a sync (where the saved length is
    the agreed one), when the epoch opens.
    """
    cursor = run.cursor
    if run.agreement is not None or cursor.length_hint is None:
        return
    if cursor.cut is None and callable(getattr(cursor.data, "set_epoch", None)):
        return
    length = cursor.length_hint  # epoch_length=, or len() of data without set_epoch
    if saved is not None and saved != length:
        raise ValueError(
            f"state dict is incompatible with this loop: it stopped inside epoch {epoch}, "
            f"whose length was {saved}, but epochs here have {length} batches "
            "(the epoch length may change only between epochs)"
        )
    if epoch_step >= length:
        raise ValueError(
            f"state dict is incompatible with this loop: it stopped at batch {epoch_step} "
            f"of epoch {epoch}, but epochs here have {length} batches"
        )


def _checked_events(run: Run[Any], records: object, elapsed: float) -> dict[str, Any]:
    """The ``events`` field, checked record by record: ``every_n_seconds`` as
    ``[period, next deadline index]`` and ``at_time_pending`` as a list of times."""
    if not isinstance(records, Mapping):
        raise ValueError(f"state dict key 'events' has {records!r}, expected a mapping")
    synced = run.agreement is not None
    periods = {
        key_id(key): event.every_n_seconds
        for key, event in run.schedule.events.items()
        if event.every_n_seconds is not None
    }
    checked: dict[str, Any] = {}
    for name, record in records.items():
        where = f"state dict events[{name!r}]"
        if not isinstance(name, str) or not isinstance(record, Mapping):
            raise ValueError(f"{where} must map a str to a mapping, got {reprlib.repr(record)}")
        unknown = set(record) - {"every_n_seconds", "at_time_pending"}
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {sorted(unknown)}")
        if "every_n_seconds" in record:
            _check_deadline(where, record["every_n_seconds"], elapsed, synced=synced)
        if "at_time_pending" in record:
            pending = record["at_time_pending"]
            if (
                not isinstance(pending, list)
                or len(pending) > MAX_TRIGGER_ITEMS
                or not all(_is_time(time) for time in pending)
            ):
                raise ValueError(
                    f"{where}['at_time_pending'] must be a list of at most "
                    f"{MAX_TRIGGER_ITEMS:,} finite times >= 0 and < 1e12, got "
                    f"{reprlib.repr(pending)}"
                )
        checked[name] = dict(record)
    for name, period in periods.items():
        if name not in checked and elapsed / float(period) >= DEADLINE_RATIO_LIMIT:
            raise ValueError(
                f"state dict elapsed={elapsed!r} is too long for events[{name!r}]'s "
                f"every_n_seconds={period!r}: successive deadlines cannot be told apart"
            )
    return checked


def _is_time(value: object) -> bool:
    """A finite number of seconds >= 0 and below 1e12 (not a bool, not a huge int)."""
    seconds = finite_float(value)
    return seconds is not None and 0 <= seconds < SECONDS_LIMIT


def _check_deadline(where: str, value: object, elapsed: float, *, synced: bool) -> None:
    """``[period, k]``: a period > 0 and a next deadline ``k * period`` that is not past
    the first one after ``elapsed`` (it may lag behind it). With a sync, deadlines follow
    the agreed elapsed time, the largest over the processes, which this process's own
    saved ``elapsed`` may trail by any amount: there only the index is checked."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not _is_time(value[0])
        or not value[0] > 0
        or isinstance(value[1], bool)
        or not isinstance(value[1], numbers.Integral)
        or not 1 <= int(value[1]) < COUNT_LIMIT
    ):
        raise ValueError(
            f"{where}['every_n_seconds'] must be [period > 0, next deadline index >= 1], "
            f"got {reprlib.repr(value)}"
        )
    period, k = float(value[0]), int(value[1])
    if elapsed / period >= DEADLINE_RATIO_LIMIT or k >= DEADLINE_RATIO_LIMIT:
        raise ValueError(
            f"{where}['every_n_seconds'] = {reprlib.repr(value)} with elapsed={elapsed!r}: "
            "successive deadlines of that period cannot be told apart in floating point"
        )
    if not synced and (k - 1) * period > elapsed:
        # The loop keeps the first deadline after the elapsed time of its last decision,
        # which is never after the elapsed time saved: a later one would skip firings.
        raise ValueError(
            f"{where}['every_n_seconds'] = {reprlib.repr(value)}: its next deadline "
            f"{k * period!r} s is not the first one after the saved elapsed={elapsed!r} s"
        )
