"""A clock that moves only when told to, for tests of time-based events."""

from __future__ import annotations

import math

from dloop._validation import as_seconds


class ManualClock:
    """A clock for ``Loop(clock=...)`` whose time moves only when a test says so.

    Examples:
        >>> clock = ManualClock()
        >>> clock.advance(1.5)
        >>> clock()
        1.5

    Args:
        start: The initial time in seconds.
        tick: Seconds added after every reading, to simulate steps that take time;
            0 by default.
    """

    __slots__ = ("_tick", "time")

    def __init__(self, start: float = 0.0, *, tick: float = 0.0) -> None:
        self.time = float(start)
        self._tick = as_seconds("tick", tick, allow_zero=True)
        if not math.isfinite(self.time):
            raise ValueError(f"start must be a finite number, got {start!r}")

    def __call__(self) -> float:
        """Return the current time, then move it forward by ``tick``."""
        now = self.time
        self.time = now + self._tick
        return now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (a finite number >= 0)."""
        self.time += as_seconds("seconds", seconds, allow_zero=True)

    def __repr__(self) -> str:
        return f"ManualClock(time={self.time!r}, tick={self._tick!r})"
