"""The time of a run: checked clock readings, the step-time estimate and ``max_seconds``."""

from __future__ import annotations

import math
import reprlib
from collections import deque
from collections.abc import Callable
from statistics import median
from typing import cast

from dloop._validation import SECONDS_LIMIT

ESTIMATE_WINDOW = 5
"""How many recent measurements the step-time estimate is the median of: one slow step (a
compilation, a checkpoint) among them does not rule it."""


def _as_float(reading: object) -> object:
    """A clock reading as a float when it is a number (an int too large for a float, text
    and other objects are left for ``TimeBudget.check`` to refuse by name)."""
    if type(reading) is float or isinstance(reading, (str, bytes, bytearray)):
        return reading
    try:
        return float(reading)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return reading


class TimeBudget:
    """Elapsed time and the ``max_seconds`` decision of one run.

    ``elapsed`` is ``now - start``, where ``start`` is the clock at the first ``next()``
    minus the elapsed time restored from a state dict. The expected duration of one step,
    ``step_seconds``, is the median of the last few per-step means measured between
    decided steps; the first step after every (re)start (a compilation, a warm-up) is
    never measured, so it cannot make ``max_seconds`` stop a run early (SPEC rule 26).
    """

    __slots__ = (
        "_reference",
        "_samples",
        "_warm_step",
        "clock",
        "elapsed_offset",
        "latest",
        "max_seconds",
        "start",
        "step_seconds",
    )

    def __init__(self, clock: Callable[[], float], max_seconds: float | None) -> None:
        self.clock = clock
        self.max_seconds = max_seconds
        self.start = 0.0
        self.latest = SECONDS_LIMIT
        """The first reading beyond the elapsed-time bound: ``start + 1e12``."""
        self.elapsed_offset = 0.0
        self.step_seconds: float | None = None
        self._samples: deque[float] = deque(maxlen=ESTIMATE_WINDOW)
        self._reference: tuple[int, float] | None = None
        self._warm_step = 1

    def restore(self, elapsed: float, step_seconds: float | None) -> None:
        """Continue from a state dict: its elapsed time and its step-time estimate."""
        self.elapsed_offset = elapsed
        self.step_seconds = step_seconds
        self._samples.clear()
        if step_seconds is not None:
            self._samples.append(step_seconds)

    def begin(self, after_step: int) -> float:
        """Read the clock's origin when iteration starts after ``after_step`` steps done.

        A clock whose first reading is another number type than float (an int, a
        Fraction, a Decimal, numpy's float64) is read through a conversion to float from
        here on, so that every path sees floats (and the C accelerator's quiet steps
        apply to it).
        """
        reading: object = self.clock()
        if type(reading) is not float:
            raw = self.clock
            self.clock = lambda: cast(float, _as_float(raw()))
            reading = _as_float(reading)
        now = self.check(reading, -math.inf, "when iteration began")
        self.start = now - self.elapsed_offset
        self.latest = self.start + SECONDS_LIMIT
        self._reference = None
        # The body of the first step after a (re)start is not measured: the reference of
        # the first measurement is the step after it.
        self._warm_step = after_step + 2
        return now

    def check(self, reading: object, floor: float, where: object) -> float:
        """A clock reading as seconds: a finite number (else ``ValueError`` naming it) and
        never below ``floor`` (a reading that goes back counts as no time passing).

        ``where`` is the step the reading is for, or words that say when it was taken.
        """
        if isinstance(where, int):
            where = f"at step {where}"
        shown = reprlib.repr(reading)
        try:
            if isinstance(reading, (str, bytes, bytearray)):
                raise TypeError
            now = float(reading)  # type: ignore[arg-type]
        except OverflowError:  # an int too large for a float
            now = math.inf
        except (TypeError, ValueError):
            raise TypeError(
                f"clock returned {shown} (a {type(reading).__name__}) {where}; it "
                "must return seconds as a finite number"
            ) from None
        if not math.isfinite(now):
            raise ValueError(f"clock returned {shown} {where}, not a finite number of seconds")
        if now < floor:
            return float(floor)  # (a quiet step of the pure path keeps the raw reading)
        if floor != -math.inf and now - self.start >= SECONDS_LIMIT:
            raise ValueError(
                f"clock reading {shown} {where} makes the elapsed time "
                f"{now - self.start:g} s, beyond 1e12 s: does the clock return seconds?"
            )
        return now

    def observe(self, step: int, now: float) -> None:
        """Measure the mean step duration since the last decided step, on a decided step."""
        if step < self._warm_step:
            return
        reference = self._reference
        self._reference = (step, now)
        if reference is None or step <= reference[0]:
            return
        self._samples.append((now - reference[1]) / (step - reference[0]))
        self.step_seconds = median(self._samples)

    def ends(self, elapsed: float, step_seconds: float | None, horizon: int) -> bool:
        """Whether ``max_seconds`` ends the run at ``elapsed``, given that the next chance
        to stop is ``horizon`` steps away."""
        limit = self.max_seconds
        return limit is not None and elapsed + horizon * (step_seconds or 0.0) >= limit

    def due(self, next_time: float) -> float:
        """The clock value at which a time decision is next due: the next time trigger, the
        threshold at which max_seconds may end the run, or the elapsed-time bound."""
        deadline = min(next_time, SECONDS_LIMIT)
        if self.max_seconds is not None:
            deadline = min(deadline, self.max_seconds - (self.step_seconds or 0.0))
        return self.start + deadline
