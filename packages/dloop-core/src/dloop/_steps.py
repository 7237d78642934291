"""The per-step hot path in Python: one generator for each kind of data.

Each kind has its own generator, rather than one that delegates with ``yield from``, which
would cost a frame switch on every step. A quiet step (no decision due) is three compares
and three stores; every other step goes to ``Run._decide``. The C accelerator
(``_speedups.c``) does what ``sized_steps`` does.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING, TypeVar

from dloop._cursor import END

if TYPE_CHECKING:
    from dloop._run import Run

T = TypeVar("T")

EMPTY: frozenset[Hashable] = frozenset()
"""The events of a quiet step: one shared empty set, so quiet steps allocate nothing."""

CONTINUE, EPOCH_OVER, FINISHED = 0, 1, 2
"""What ``Run._decide`` says about the step it decided: the epoch goes on, it ended on
that step (the next batch opens the next epoch), or the run ended on it."""


def sized_steps(run: Run[T]) -> Generator[tuple[T, frozenset[Hashable]], None, None]:
    """Re-iterable data whose epoch lengths are known: no look-ahead. The C accelerator
    does the same (``_speedups.c``)."""
    try:
        if not run._begin():
            return
        clock = run.budget.clock
        cell = run.time_cell
        empty = EMPTY
        while True:
            next_step = run._open_epoch()
            iterator = run.cursor.iterator
            assert iterator is not None
            step = run.step
            floor = now = run.now
            try:
                for batch in iterator:
                    step += 1
                    now = clock()
                    # --- hot path: a quiet step is three compares and three stores ---
                    if step < next_step and floor <= now < cell[0]:
                        floor = run.now = now
                        run.step = step
                        yield batch, empty
                        continue
                    events, next_step, status, floor = run._decide(step, now, floor)
                    yield batch, events
                    if status == FINISHED:
                        run._end()
                        return
                    if status == EPOCH_OVER:
                        break
                else:
                    run._raise_short_epoch()
            except TypeError:
                run.budget.check(now, floor, step)  # a reading that is no number
                raise
    finally:
        run.signals.restore()


def unsized_steps(run: Run[T]) -> Generator[tuple[T, frozenset[Hashable]], None, None]:
    """Data of unknown epoch length, and one-shot streams: the cursor looks ahead (one
    batch without a sync, up to ``sync.every_n_steps`` with one) to know which batch
    ends an epoch or the data."""
    try:
        if not run._begin():
            return
        cursor = run.cursor
        clock = run.budget.clock
        cell = run.time_cell
        empty = EMPTY
        peeking = run.agreement is None
        next_step = run._open_epoch()
        step = run.step
        floor = now = run.now
        while True:
            batch = cursor.take()
            if batch is END:
                if not cursor.padding(step + 1):
                    run._no_batch()
                    return
                batch = None  # type: ignore[assignment]  # a padding step has no batch
            step += 1
            now = clock()
            try:
                quiet = step < next_step and floor <= now < cell[0]
            except TypeError:  # a reading that is no number: _decide says so
                quiet = False
            if quiet and (not peeking or cursor.has_next()):
                floor = run.now = now
                run.step = step
                yield batch, empty
                continue
            events, next_step, status, floor = run._decide(step, now, floor)
            yield batch, events
            if status == FINISHED:
                return
            if status == EPOCH_OVER:
                next_step = run._open_epoch()
    finally:
        run.signals.restore()
