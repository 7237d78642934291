"""The built-in events every loop emits."""

from __future__ import annotations

import enum


class LoopEvents(enum.Enum):
    """Events the loop emits by itself, next to the named events of ``events=``.

    Members are plain enum members (not strings), so no user key can collide with them:
    test them with ``LoopEvents.EPOCH_END in events``.
    """

    EPOCH_START = "EPOCH_START"
    """On the first batch of every epoch (a resumed epoch included)."""

    EPOCH_END = "EPOCH_END"
    """On the last batch of every epoch; not on a run cut short inside an epoch."""

    TRAINING_END = "TRAINING_END"
    """On the last batch the loop yields, exactly once, whatever ended the run."""

    INTERRUPTED = "INTERRUPTED"
    """With ``TRAINING_END`` when a stop request (or a stop signal) ended the run."""

    def __repr__(self) -> str:
        return f"LoopEvents.{self.name}"
