"""An in-process ``sync`` for tests that run each "process" of a job as a thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from dloop._validation import as_count, as_seconds


class ThreadSync:
    """Agreement among ``num_processes`` threads of one test, each running its own Loop.

    Pass the same ``ThreadSync`` to every thread's ``Loop(sync=...)``: ``combine`` waits
    until every thread has called it, then gives each the element-wise maximum.

    Args:
        num_processes: How many threads take part (an int >= 1).
        every_n_steps: How often the loops agree, in steps.
        timeout: Seconds to wait for the other threads before failing with
            ``TimeoutError`` instead of hanging the test.
    """

    __slots__ = ("_done", "_gather", "_lock", "_result", "_round", "calls", "every_n_steps")

    def __init__(self, num_processes: int, *, every_n_steps: int, timeout: float = 30.0) -> None:
        self.every_n_steps = as_count("every_n_steps", every_n_steps)
        as_count("num_processes", num_processes)
        seconds = as_seconds("timeout", timeout, allow_zero=False)
        self._gather = threading.Barrier(num_processes, action=self._reduce, timeout=seconds)
        self._done = threading.Barrier(num_processes, timeout=seconds)
        self._lock = threading.Lock()
        self._round: list[Sequence[int]] = []
        self._result: tuple[int, ...] = ()
        self.calls = 0
        """How many agreement rounds have completed."""

    def _reduce(self) -> None:
        lengths = {len(flags) for flags in self._round}
        if len(lengths) != 1:
            raise ValueError(f"combine was called with flags of different lengths {lengths}")
        self._result = tuple(max(column) for column in zip(*self._round, strict=True))
        self._round = []
        self.calls += 1

    def combine(self, flags: Sequence[int]) -> Sequence[int]:
        """Return the element-wise maximum of every thread's ``flags`` for this round."""
        with self._lock:
            self._round.append(tuple(int(flag) for flag in flags))
        try:
            self._gather.wait()
            result = self._result
            # Second rendezvous: nobody starts the next round before all have read this one.
            self._done.wait()
        except threading.BrokenBarrierError:
            raise TimeoutError(
                "ThreadSync.combine: not every thread reached the agreement step in time "
                "(a thread died, stopped early, or called on different steps)"
            ) from None
        return result
