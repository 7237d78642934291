"""Argument checks whose errors name the argument, the value and what is accepted."""

from __future__ import annotations

import math
import numbers
import operator
import reprlib
from collections.abc import Collection

COUNT_LIMIT = 1 << 62
"""Every count, limit, step and epoch is an int below this (SPEC rule 22); the loop keeps
``1 << 62`` itself as its "never" step, and the C accelerator's 64-bit counters stay far
from overflow."""

SECONDS_LIMIT = 1e12
"""Every time value (a limit, a trigger, an elapsed time) is below this many seconds (about
31,700 years), so that the agreement protocol carries it as microseconds in an int below
2**62."""

MAX_TRIGGER_ITEMS = 1 << 20
"""The most items ``at_step`` or ``at_time`` may hold (1,048,576)."""

MIN_PERIOD = 1e-6
"""The shortest ``every_n_seconds``: one microsecond, the resolution of agreed times."""


def finite_float(value: object) -> float | None:
    """``value`` as a float when it is a real number (not a bool) that is finite as a
    float, else None: an int too large for a float is not finite here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        result = float(value)
    except (OverflowError, TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _describe(value: object) -> str:
    return f"{reprlib.repr(value)} (a {type(value).__name__})"


def as_count(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` as an int from ``minimum`` to below 2**62; bools and floats are
    rejected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum} and < 2**62, got {_describe(value)}")
    result = operator.index(value)
    if not minimum <= result < COUNT_LIMIT:
        raise ValueError(
            f"{name} must be an int >= {minimum} and < 2**62, got {reprlib.repr(result)}"
        )
    return result


def as_seconds(
    name: str, value: object, *, allow_zero: bool, minimum: float | None = None
) -> float:
    """Return ``value`` as a finite float below 1e12 (> 0, or >= 0 with ``allow_zero``,
    or >= ``minimum`` when given)."""
    bound = f">= {minimum:g}" if minimum is not None else (">= 0" if allow_zero else "> 0")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a finite number {bound} and < 1e12 seconds, got {_describe(value)}"
        )
    result = finite_float(value)
    if (
        result is None
        or result < (minimum or 0.0)
        or (result == 0 and not allow_zero)
        or result >= SECONDS_LIMIT
    ):
        raise ValueError(
            f"{name} must be a finite number {bound} and < 1e12 seconds, got {reprlib.repr(value)}"
        )
    return result


def _as_collection(name: str, value: object, what: str) -> Collection[object]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise TypeError(f"{name} must be {what} or a collection of them, got {_describe(value)}")
    try:
        size = f"{len(value):,}"
        if len(value) == 0:
            raise ValueError(f"{name} must not be an empty collection, got {reprlib.repr(value)}")
        many = len(value) > MAX_TRIGGER_ITEMS
    except OverflowError:  # a range longer than len() can say
        size, many = "2**63 or more", True
    if many:
        # Each item is kept (a step or a time to fire on): checked before any is read, so
        # that a huge range is refused at once instead of filling memory.
        raise ValueError(
            f"{name} has {size} items; at most {MAX_TRIGGER_ITEMS:,} are allowed (for a "
            "regular pattern use every_n_steps or every_n_seconds, or a condition_function)"
        )
    return value


def as_steps(name: str, value: object) -> tuple[int, ...]:
    """Return an int or a collection of ints (each >= 0) as a sorted tuple without repeats."""
    if isinstance(value, numbers.Integral):
        return (as_count(name, value, minimum=0),)
    items = _as_collection(name, value, "an int >= 0")
    return tuple(sorted({as_count(f"{name} item", item, minimum=0) for item in items}))


def as_times(name: str, value: object) -> tuple[float, ...]:
    """Return a number or a collection of numbers (each finite, >= 0) as a sorted tuple."""
    if isinstance(value, numbers.Real):
        return (as_seconds(name, value, allow_zero=True),)
    items = _as_collection(name, value, "a finite number >= 0")
    return tuple(sorted({as_seconds(f"{name} item", item, allow_zero=True) for item in items}))
