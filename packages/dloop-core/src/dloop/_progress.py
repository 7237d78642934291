"""How far a run has come: ``total_steps``, ``progress``, ``eta`` and ``LoopState``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dloop._schedule import NEVER
from dloop._state import LoopState

if TYPE_CHECKING:
    from dloop._run import Run


def total_steps(run: Run[Any]) -> int | None:
    """The global number of steps the run reaches, when known: epochs still to come are
    counted at the length of the current one (SPEC rule 25). A run that has ended (its
    one-shot data ran out, a stop, ``close()``) reached its last step."""
    if run.finished:
        return run.step + 1
    total = run.max_steps
    length = run.epoch_length()
    if run.max_epochs != NEVER and length is not None:
        if run.epoch_finished:
            by_epochs = run.step + 1 + (run.max_epochs - run.epoch - 1) * length
        else:
            by_epochs = run.epoch_first_step + (run.max_epochs - run.epoch) * length
        total = by_epochs if total is None else min(total, by_epochs)
    return total if total is None else min(total, NEVER)  # the last step is below 2**62


def loop_state(run: Run[Any]) -> LoopState:
    """The ``LoopState`` of the batch just yielded (of the restored position before any):
    ``progress`` is the larger of the step and time fractions, ``eta`` the smaller of the
    estimates from the steps and from ``max_seconds``."""
    step = run.step
    elapsed = run.elapsed()
    total = total_steps(run)
    max_seconds = run.budget.max_seconds
    fractions = []
    if total:  # (0 for a run that ended before its first step)
        fractions.append((step + 1) / total)
    if max_seconds is not None:
        fractions.append(elapsed / max_seconds)
    progress = min(1.0, max(0.0, max(fractions))) if fractions else None
    etas = []
    if total is not None and step >= 1:
        etas.append(elapsed / step * (total - step))
    if max_seconds is not None:
        etas.append(max_seconds - elapsed)
    eta = max(0.0, min(etas)) if etas else None
    if run.finished:
        eta = 0.0
    return LoopState(
        step=step,
        epoch=run.epoch,
        epoch_step=step - run.epoch_first_step,
        elapsed=elapsed,
        epoch_length=run.epoch_length(),
        total_steps=total,
        progress=progress,
        eta=eta,
    )
