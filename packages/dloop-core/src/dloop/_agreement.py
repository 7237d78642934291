"""Agreement across processes: one ``combine`` of a small int vector on agreed steps.

Every process calls ``sync.combine`` at the same points, always with the same seven ints:

    [stop requested, elapsed µs, step duration µs, length unknown, batch count, config, ~config]

On the steps ``s`` with ``(s + 1) % every_n_steps == 0`` (agreement steps) the first three
decide time events, ``max_seconds`` and stop requests (SPEC rule 20). Every agreement also
settles where the data of the current pass ends (SPEC rule 28): each process gives how
many batches it can still yield after step ``s`` (its exact remaining count when its epoch
length is known, else what it holds in a look-ahead of ``window`` batches, with "length
unknown" set when it may hold more); the agreed count is the minimum (``uneven="shortest"``,
sent as its complement so that a maximum finds it) or the maximum (``"longest"``). Each
epoch also starts with one such agreement. The last two ints carry a fingerprint of the
loop's configuration and its complement, so that processes configured differently (which
would call ``combine`` on different steps and hang) fail together with a clear error.
"""

from __future__ import annotations

import numbers
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from dloop._schedule import next_multiple_step
from dloop._sync import Sync
from dloop._validation import COUNT_LIMIT, as_count

_MICROSECONDS = 1_000_000
_CAP = COUNT_LIMIT - 1
_FLAGS = 7


class Agreed(NamedTuple):
    """What every process learns from one agreement."""

    stop: bool
    elapsed: float
    step_seconds: float
    batches: int
    """The agreed number of batches after the step (minimum or maximum over processes)."""
    unknown: bool
    """Whether some process may hold more batches than it counted."""


class Agreement:
    """The ``sync`` of a loop, its agreement steps and its protocol."""

    __slots__ = (
        "_combine",
        "_config",
        "every_n_steps",
        "fingerprint",
        "longest",
        "next_step",
        "sync",
    )

    def __init__(self, sync: Sync, *, longest: bool, config: str) -> None:
        every = getattr(sync, "every_n_steps", None)
        # Read once: a sync whose every_n_steps changed mid-run would agree on other steps
        # than the other processes and hang them.
        self.every_n_steps = as_count("sync.every_n_steps", every)
        combine = getattr(sync, "combine", None)
        if not callable(combine):
            raise TypeError(f"sync must have a method combine(flags), got {sync!r}")
        self.sync = sync
        self._combine = combine
        self.longest = longest
        self._config = f"{self.every_n_steps}|{'longest' if longest else 'shortest'}|{config}"
        self.fingerprint = 0
        self.next_step = 0

    def start(self, after_step: int) -> None:
        """Agree next on the first agreement step after ``after_step``; the fingerprint
        covers the configuration and the step the run starts from."""
        self.next_step = next_multiple_step(after_step, self.every_n_steps)
        self.fingerprint = zlib.crc32(f"{self._config}|{after_step}".encode())

    def window(self, step: int, horizon: int) -> int:
        """How many batches after ``step`` a process looks at before the next agreement:
        none past step ``horizon`` (what the run can still use)."""
        return min(self.next_step, horizon) - step

    def combine(
        self,
        *,
        stop: bool = False,
        elapsed: float = 0.0,
        step_seconds: float = 0.0,
        count: int,
        unknown: bool,
    ) -> Agreed:
        """Combine this process's values with every other process's."""
        count = min(max(count, 0), _CAP)
        fingerprint = self.fingerprint
        flags = (
            1 if stop else 0,
            max(0, round(elapsed * _MICROSECONDS)),
            max(0, round(step_seconds * _MICROSECONDS)),
            1 if unknown else 0,
            count if self.longest else _CAP - count,
            fingerprint,
            _CAP - fingerprint,
        )
        agreed = self._check(self._combine(flags), flags)
        if agreed[5] != fingerprint or _CAP - agreed[6] != fingerprint:
            raise ValueError(
                f"the processes of this run configured their loops differently (sync "
                f"{self.sync!r}: the configuration fingerprints range from {_CAP - agreed[6]} "
                f"to {agreed[5]}); every process needs the same sync.every_n_steps, uneven, "
                "limits, epoch_length, events and kind of data (re-iterable or one-shot)"
            )
        return Agreed(
            stop=agreed[0] > 0,
            elapsed=agreed[1] / _MICROSECONDS,
            step_seconds=agreed[2] / _MICROSECONDS,
            batches=agreed[4] if self.longest else _CAP - agreed[4],
            unknown=agreed[3] > 0,
        )

    def agree_on_time(self, elapsed: float, step_seconds: float | None) -> tuple[float, float]:
        """The largest elapsed time and step duration over the processes (one combine)."""
        agreed = self.combine(
            elapsed=elapsed, step_seconds=step_seconds or 0.0, count=0, unknown=False
        )
        return agreed.elapsed, agreed.step_seconds

    def _check(self, agreed: object, flags: Sequence[int]) -> tuple[int, ...]:
        """``agreed`` as ints, or an error naming the sync (SPEC rule 27)."""
        sync = self.sync
        if isinstance(agreed, (str, bytes)) or not isinstance(agreed, Sequence):
            raise TypeError(
                f"sync.combine of {sync!r} returned {agreed!r} (a {type(agreed).__name__}); it "
                f"must return a sequence of {_FLAGS} ints, the element-wise maximum of the flags "
                "over all processes"
            )
        if len(agreed) != len(flags):
            raise ValueError(
                f"sync.combine of {sync!r} returned {len(agreed)} values for {len(flags)} "
                "flags; it must return their element-wise maximum over all processes"
            )
        values = []
        for index, (value, own) in enumerate(zip(agreed, flags, strict=True)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(
                    f"sync.combine of {sync!r} returned {value!r} (a {type(value).__name__}) at "
                    f"index {index}; every value must be an int"
                )
            number = int(value)
            if not 0 <= number < COUNT_LIMIT or number < own:
                raise ValueError(
                    f"sync.combine of {sync!r} returned {number} at index {index} for this "
                    f"process's {own}: not the element-wise maximum over all processes (each "
                    "value must be in [0, 2**62) and at least this process's)"
                )
            values.append(number)
        return tuple(values)
