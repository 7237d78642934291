"""``MultihostSync``: the loop's agreement across the processes of a JAX job."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from dloop._validation import as_count

LIMIT = 1 << 62
"""Flags are non-negative ints below this (``dloop.Sync``'s contract)."""

_LOW_BITS = 31
_LOW_MASK = (1 << _LOW_BITS) - 1


class MultihostSync:
    """A ``dloop.Sync`` over JAX's multi-process runtime (``jax.distributed``).

    ``Loop(data, ..., sync=MultihostSync(every_n_steps=50))`` makes every process of the
    job take its time-based decisions (``every_n_seconds``, ``at_time``, ``max_seconds``,
    stop requests) on the same steps, from the same values. Each agreement step costs
    one collective: a ``process_allgather`` of one small int32 array, whose maximum is
    taken on the host. With a single process ``combine`` returns the flags as they are,
    without any collective.

    JAX arrays are 32-bit unless ``jax_enable_x64`` is set, and flags go up to 2**62, so
    each flag travels as two non-negative int32 halves (``value >> 31`` and
    ``value & (2**31 - 1)``) and is put back together on the host before the maximum:
    exact for every flag, without touching the global x64 setting.

    Construct it before or after ``jax.distributed.initialize``: it talks to JAX only
    when ``combine`` is first called. Every process must call ``combine`` at the same
    steps with as many flags, as ``Loop`` does.

    Args:
        every_n_steps: How often the processes agree, in steps (an int >= 1): the loop
            calls ``combine`` on steps ``s`` with ``(s + 1) % every_n_steps == 0``.
    """

    __slots__ = ("every_n_steps",)

    def __init__(self, *, every_n_steps: int) -> None:
        self.every_n_steps: int = as_count("every_n_steps", every_n_steps)

    def combine(self, flags: Sequence[int]) -> tuple[int, ...]:
        """Return the element-wise maximum of ``flags`` over all JAX processes.

        Raises:
            TypeError, ValueError: For a flag that is not an int in ``[0, 2**62)``.
        """
        values = _checked(flags)
        if not values or jax.process_count() == 1:
            return values
        gathered = multihost_utils.process_allgather(split_halves(values))
        return tuple(int(value) for value in join_halves(gathered).max(axis=0))

    def __repr__(self) -> str:
        return f"MultihostSync(every_n_steps={self.every_n_steps})"


def split_halves(values: Sequence[int]) -> np.ndarray[Any, np.dtype[np.int32]]:
    """``values`` (ints in ``[0, 2**62)``) as an int32 array of shape ``(len, 2)``:
    the high and the low 31 bits of each."""
    return np.array([(value >> _LOW_BITS, value & _LOW_MASK) for value in values], np.int32)


def join_halves(halves: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The inverse of ``split_halves`` over the last axis, as int64 (exact below 2**62)."""
    wide = np.asarray(halves).astype(np.int64)
    return (wide[..., 0] << _LOW_BITS) | wide[..., 1]


def _checked(flags: Sequence[object]) -> tuple[int, ...]:
    values: list[int] = []
    for index, flag in enumerate(flags):
        if isinstance(flag, bool) or not isinstance(flag, numbers.Integral):
            raise TypeError(
                f"flags[{index}] must be an int in [0, 2**62), got {flag!r} "
                f"(a {type(flag).__name__})"
            )
        value = int(flag)
        if not 0 <= value < LIMIT:
            raise ValueError(f"flags[{index}] must be an int in [0, 2**62), got {value!r}")
        values.append(value)
    return tuple(values)
