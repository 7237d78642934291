"""State dicts: what a loop saves to resume exactly where it was."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dloop._run import Run

FORMAT = "dloop.Loop"
VERSION = 1

_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "version": (int,),
    "step": (int,),
    "epoch": (int,),
    "epoch_step": (int,),
    "epoch_finished": (bool,),
    "epoch_length": (int, type(None)),
    "finished": (bool,),
    "elapsed": (int, float),
    "step_seconds": (int, float, type(None)),
    "events": (dict,),
    "data": (object,),
}

SAVE_DATA = "dloop_state_dict"
"""The data's own hook for its part of the state dict (see ``Loop``): what an adapter
needs beyond the position to reproduce an epoch, such as a shuffling generator's state."""
LOAD_DATA = "dloop_load_state_dict"
"""The data's hook that takes that part back, before the resumed epoch is iterated."""


def state_dict(run: Run[Any]) -> dict[str, Any]:
    """The JSON-ready state of ``run``: "steps 0..step are done"."""
    # Once iterating, the time until this call counts too (the body of the step so far),
    # on the last step of the run as on any other.
    elapsed = run.clock() - run.start if run.started else run.elapsed()
    started = run.started or run.step >= 0
    return {
        "format": FORMAT,
        "version": VERSION,
        "step": run.step,
        "epoch": run.epoch,
        "epoch_step": run.step - run.epoch_first_step if started else -1,
        "epoch_finished": run.epoch_finished,
        "epoch_length": run.epoch_length_now if run.started else run.epoch_length,
        "finished": run.finished_by_limit,
        "elapsed": elapsed,
        "step_seconds": run.step_seconds,
        "events": run.schedule.time_state() if run.started else dict(run.saved_events),
        "data": data_state(run),
    }


def data_state(run: Run[Any]) -> object:
    """The data's own part of a state dict: ``data.dloop_state_dict()``, or None."""
    save = getattr(run.data, SAVE_DATA, None)
    if callable(save):
        return save()
    return run.saved_data


def load_state_dict(run: Run[Any], state: Mapping[str, Any]) -> None:
    """Check ``state`` and position ``run`` after its last step done."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state dict must be a mapping, got a {type(state).__name__}")
    missing = [name for name in _FIELDS if name not in state]
    if missing:
        raise ValueError(f"state dict is missing key(s) {missing}; expected {list(_FIELDS)}")
    if state["format"] != FORMAT:
        raise ValueError(f"state dict format {state['format']!r} is not {FORMAT!r}")
    if state["version"] != VERSION:
        raise ValueError(
            f"state dict version {state['version']!r} is not supported by this dloop "
            f"(which reads version {VERSION})"
        )
    for name, types in _FIELDS.items():
        value = state[name]
        if not isinstance(value, types) or (
            isinstance(value, bool) and bool not in types and object not in types
        ):
            expected = " or ".join(t.__name__ for t in types)
            raise ValueError(f"state dict key {name!r} has {value!r}, expected {expected}")
    step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
    elapsed = float(state["elapsed"])
    if step < -1 or epoch < 0 or not -1 <= epoch_step <= step or not math.isfinite(elapsed):
        raise ValueError(
            f"state dict position is inconsistent: step={step}, epoch={epoch}, "
            f"epoch_step={epoch_step}, elapsed={elapsed}"
        )
    if elapsed < 0:
        raise ValueError(f"state dict elapsed must be >= 0, got {elapsed}")
    length = run.epoch_length
    finished = state["epoch_finished"]
    if not finished and length is not None:
        saved_length = state["epoch_length"]
        if saved_length is not None and saved_length != length:
            raise ValueError(
                f"state dict is incompatible with this loop: it stopped inside epoch {epoch}, "
                f"whose length was {saved_length}, but epochs here have {length} batches "
                "(the epoch length may change only between epochs)"
            )
        if epoch_step >= length:
            raise ValueError(
                f"state dict is incompatible with this loop: it stopped at batch {epoch_step} "
                f"of epoch {epoch}, but epochs here have {length} batches"
            )
    for key, record in state["events"].items():
        if not isinstance(record, Mapping):
            raise ValueError(f"state dict events[{key!r}] must be a mapping, got {record!r}")
    saved_data = state["data"]
    if saved_data is not None:
        load = getattr(run.data, LOAD_DATA, None)
        if not callable(load):
            raise ValueError(
                "state dict key 'data' holds the state of the data it was saved with (from "
                f"its {SAVE_DATA}(), as dloop_torch.prepare makes), but this loop's data "
                f"{run.data!r} has no {LOAD_DATA}(): resume over the same kind of data"
            )
        load(saved_data)
    run.saved_data = saved_data
    run.step = step
    run.resumed_step = step
    run.epoch = epoch
    run.epoch_first_step = step - epoch_step
    run.epoch_finished = finished
    run.finished_by_limit = state["finished"]
    run.elapsed_offset = elapsed
    run.step_seconds = None if state["step_seconds"] is None else float(state["step_seconds"])
    run.saved_events = state["events"]
