"""``LoopState``: where the loop is, as of the batch just yielded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopState:
    """A snapshot of the loop at the batch just yielded (``loop.state``).

    Before the first batch ``step`` is the last step already done: -1 for a new run, or
    the saved step after ``load_state_dict``.

    Attributes:
        step: 0-based global index of the batch just yielded.
        epoch: 0-based epoch of that batch.
        epoch_step: 0-based index of that batch within its epoch.
        elapsed: Seconds of the loop's clock since iteration began, read just before the
            batch was yielded, plus the elapsed time restored from a state dict.
        epoch_length: Batches per epoch, from ``epoch_length=`` or ``len(data)``; None
            when unknown.
        total_steps: Global number of steps the run will reach when known in advance
            (from ``max_steps``, or ``max_epochs`` with a known epoch length); else None.
        progress: 0..1, the larger of the step fraction and the time fraction
            (``elapsed / max_seconds``); None when neither is known.
        eta: Estimated seconds until the run ends; None until it can be estimated.
    """

    step: int
    epoch: int
    epoch_step: int
    elapsed: float
    epoch_length: int | None
    total_steps: int | None
    progress: float | None
    eta: float | None
