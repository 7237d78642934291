"""``Event``: a named trigger, such as every 16 steps or once an hour."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dloop._validation import MIN_PERIOD, as_count, as_seconds, as_steps, as_times

if TYPE_CHECKING:
    from dloop._state import LoopState


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """When a named event fires; give at least one trigger, and it fires when any does.

    Steps are 0-based and global across epochs; times are seconds of the loop's clock
    since iteration began (``LoopState.elapsed``).

    Args:
        every_n_steps: Fires on steps ``s`` with ``(s + 1) % n == 0``: n=16 fires on steps
            15, 31, 47, ...
        at_step: An int or a collection of ints; fires once on each of those steps.
        every_n_epochs: Fires on the last batch of epochs ``e`` with ``(e + 1) % n == 0``.
        every_n_seconds: Fires on the first step whose elapsed time reaches ``k * t`` for
            k = 1, 2, ... (no drift); deadlines missed during one long step fire once.
        at_time: A number or a collection; fires once on the first step whose elapsed
            time reaches each of them.
        condition_function: Called once per step with the up-to-date ``LoopState``;
            fires when it returns true.

    Counts and steps are ints below 2**62; times are finite and below 1e12 seconds;
    ``every_n_seconds`` is at least 1e-6 (one microsecond, the resolution of agreed times).

    Raises:
        ValueError: No trigger given, a count < 1, a negative step, a negative or
            non-finite time, a value beyond the bounds above, or an empty collection.
        TypeError: A count that is not an int (bools are rejected), a time that is not a
            number, or a ``condition_function`` that is not callable.
    """

    every_n_steps: int | None = None
    at_step: int | Collection[int] | None = None
    every_n_epochs: int | None = None
    every_n_seconds: float | None = None
    at_time: float | Collection[float] | None = None
    condition_function: Callable[[LoopState], bool] | None = None

    def __post_init__(self) -> None:
        if all(getattr(self, name) is None for name in self.__slots__):
            raise ValueError(
                "Event needs at least one trigger: every_n_steps, at_step, every_n_epochs, "
                "every_n_seconds, at_time or condition_function"
            )
        if self.every_n_steps is not None:
            as_count("every_n_steps", self.every_n_steps)
        if self.at_step is not None:
            object.__setattr__(self, "at_step", as_steps("at_step", self.at_step))
        if self.every_n_epochs is not None:
            as_count("every_n_epochs", self.every_n_epochs)
        if self.every_n_seconds is not None:
            as_seconds(
                "every_n_seconds", self.every_n_seconds, allow_zero=False, minimum=MIN_PERIOD
            )
        if self.at_time is not None:
            object.__setattr__(self, "at_time", as_times("at_time", self.at_time))
        if self.condition_function is not None and not callable(self.condition_function):
            raise TypeError(
                "condition_function must be callable (state) -> bool, got "
                f"{self.condition_function!r} (a {type(self.condition_function).__name__})"
            )
