"""Where a run is in its data: epochs, their lengths, the look-ahead, streams, padding.

The data is re-iterable (iterated once per epoch, after ``set_epoch``) or a one-shot
iterator (``iter(data) is data``: one pass for the whole run, cut into epochs by
``epoch_length`` when given). A *pass* is what one ``iter()`` gives: an epoch of
re-iterable data, or the whole stream. The cursor knows, as steps, where the current pass
ends on this process (``local_last``), where it ends for the run (``pass_last``: the same
without a ``sync``, the agreed end with one) and where the current cut epoch ends
(``cut_last``), and which steps are padding (``uneven="longest"``).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dloop._schedule import NEVER
from dloop._validation import COUNT_LIMIT
from dloop._warnings import warn

if TYPE_CHECKING:
    from dloop._agreement import Agreed

T = TypeVar("T")

END: Any = object()
"""What ``take`` gives when the data has no batch for the step."""

SET_EPOCH = "set_epoch"
ITER_FROM = "iter_from"


def data_length(data: object, what: str = "len(data)") -> int | None:
    """``len(data)`` (checked: an int >= 0 below 2**62), or None for data without a length
    (``len`` raises TypeError, as for a DataLoader over an IterableDataset)."""
    try:
        length = len(data)  # type: ignore[arg-type]
    except TypeError:
        return None
    except OverflowError:  # __len__ gave more than len() can return
        raise ValueError(f"{what} must be below 2**62, got more than {sys.maxsize}") from None
    if not 0 <= length < COUNT_LIMIT:
        raise ValueError(f"{what} must be below 2**62, got {length}")
    return length


class DataCursor(Generic[T]):
    """The data of one run and the position of the loop in it."""

    __slots__ = (
        "buffer",
        "cut",
        "cut_last",
        "data",
        "end",
        "exhausted",
        "failure",
        "first",
        "iterator",
        "length",
        "length_hint",
        "local_last",
        "longest",
        "one_shot",
        "opened",
        "pass_last",
        "plain",
        "sized",
        "synced",
    )

    def __init__(
        self,
        data: Iterable[T],
        *,
        epoch_length: int | None,
        one_shot: bool,
        synced: bool,
        longest: bool,
    ) -> None:
        self.data = data
        self.one_shot = one_shot
        self.cut = epoch_length
        self.synced = synced
        self.longest = longest and synced
        hint = epoch_length
        if hint is None and not one_shot:
            hint = data_length(data)
        self.length_hint = hint
        """The epoch length known at construction (for len(loop) before iterating)."""
        self.sized = hint is not None and not one_shot
        """Re-iterable data whose every epoch length is known when the epoch opens (by
        epoch_length= or len()): no look-ahead, and the C accelerator can run it."""
        self.plain = self.sized and not synced
        """Sized data in one process: the epoch ends at ``pass_last``, nothing else to know."""
        self.iterator: Iterator[T] | None = None
        self.buffer: deque[T] = deque()
        self.exhausted = False
        self.failure: Exception | None = None
        """An error the data raised while the loop looked ahead: raised in its turn, once
        the batches before it are yielded."""
        self.opened = False
        self.first = 0
        self.length: int | None = None
        self.local_last = NEVER
        self.pass_last = NEVER
        self.cut_last = NEVER
        self.end = NEVER
        """The next step where the pass or a cut epoch ends: ``min(pass_last, cut_last)``."""

    # ------------------------------------------------------------------ opening epochs

    def open(self, epoch: int, *, skip: int, first: int, done: int) -> int | None:
        """Open ``epoch``, whose first step is ``first``, after ``skip`` of its batches (and
        ``done`` of the run) were done; the epoch's length on this process, or None.

        Re-iterable data gets ``set_epoch(epoch)`` and a new iterator from batch ``skip``;
        a one-shot stream is opened once (a resume drops the ``done`` batches the saved run
        took from it) and then only cut.
        """
        self.first = first
        if self.one_shot:
            if not self.opened:
                self._open_stream(done)
            self.cut_last = NEVER if self.cut is None else first + self.cut - 1
            self.end = min(self.pass_last, self.cut_last)
            self.length = self.cut
            return self.cut
        self.close_pass(epoch - 1)
        set_epoch = getattr(self.data, SET_EPOCH, None)
        if callable(set_epoch):
            set_epoch(epoch)
        length = self.cut
        if length is None and self.sized:
            length = data_length(self.data, f"len(data) in epoch {epoch}")
            if length is None:
                raise ValueError(
                    f"data had a len() when the loop was built, but len(data) raises "
                    f"TypeError in epoch {epoch}: give epoch_length= or data whose length "
                    "stays known"
                )
        if length == 0 and not self.synced:  # with a sync, the agreement says it everywhere
            raise ValueError(f"data yielded no batch in epoch {epoch} (its length is 0)")
        self.length = length
        self.buffer.clear()
        self.exhausted = False
        self.failure = None
        self.opened = True
        self.local_last = NEVER if length is None else first + length - 1
        self.pass_last = NEVER if self.synced else self.local_last
        self.end = self.pass_last
        self.iterator = self._epoch_iterator(epoch, skip, length)
        return length

    def _epoch_iterator(self, epoch: int, skip: int, length: int | None) -> Iterator[T]:
        if self.longest and length is not None:
            skipped = self._skipped(epoch, min(skip, length), length)
            return _padded(skipped, length - skip, epoch, check_more=self.cut is None)
        return self._skipped(epoch, skip, length)

    def _skipped(self, epoch: int, skip: int, length: int | None) -> Iterator[T]:
        """The epoch's iterator after its first ``skip`` batches: from ``iter_from(skip)``
        when the data has it (adapters skip without loading), else read and dropped.

        Data of unknown length may have fewer than ``skip`` batches in this epoch: with
        ``uneven="longest"`` this process then pads; otherwise the state dict does not fit
        the data (``ValueError``). Data of known length is checked against it instead.
        """
        data = self.data
        if not skip:
            return iter(data)
        iter_from = getattr(data, ITER_FROM, None)
        if callable(iter_from):
            iterator: Iterator[T] = iter(iter_from(skip))
            if length is not None:
                return iterator
            # Whether a batch is left after the skipped ones: kept in the look-ahead.
            self.iterator = iterator
            if self.has_next():
                return iterator
            return self._short_resume(epoch, skip, None)
        iterator = iter(data)
        dropped = sum(1 for _ in islice(iterator, skip))
        if dropped < skip:
            return self._short_resume(epoch, skip, dropped)
        return iterator

    def _short_resume(self, epoch: int, skip: int, dropped: int | None) -> Iterator[T]:
        """The data had ``dropped`` (or, unknown, fewer than ``skip``) batches in an epoch
        resumed after ``skip``: this process pads (``uneven="longest"``), else an error."""
        if self.longest:  # this process's epoch ended before the resumed step: padding
            self.exhausted = True
            self.local_last = self.first + (skip if dropped is None else dropped) - 1
            return iter(())
        given = "fewer batches" if dropped is None else n_batches(dropped)
        raise ValueError(
            f"cannot resume: data yielded {given} in epoch {epoch}, but the state "
            f"dict says {skip} were already done"
        )

    def _open_stream(self, done: int) -> None:
        """Take the one-shot stream; a resume drops what the saved run took from it."""
        self.opened = True
        stream: Iterator[T] = iter(self.data)
        self.iterator = stream
        dropped = sum(1 for _ in islice(stream, done))
        if dropped < done:
            if self.longest:
                self.exhausted = True
                self.local_last = dropped - 1
                return
            raise ValueError(
                f"cannot resume: the one-shot data gave {n_batches(dropped)}, but the state dict "
                f"says {done} were already done (a resumed run reads a one-shot stream from "
                "its beginning and drops the batches of every step done)"
            )

    def close_pass(self, epoch: int) -> None:
        """After the last step of ``epoch`` (when the next opens, or the run ends on it):
        data whose length came from len() must not have yielded more batches than that
        (SPEC rule 25), when its whole epoch was used."""
        iterator = self.iterator
        self.iterator = None
        if iterator is None or self.cut is not None or self.length is None:
            return
        if self.longest:
            next(iterator)  # a padded epoch checks there is no more (raises) or pads
            return
        if self.pass_last != self.local_last:
            return
        if next(iterator, END) is not END:
            raise ValueError(
                f"data yielded more batches in epoch {epoch} than its len() = {self.length}: "
                "give epoch_length= to cut every epoch at a fixed length, or fix __len__"
            )

    # ------------------------------------------------------------------ taking batches

    def take(self) -> T:
        """The next batch of the pass (from the look-ahead first), or END; an error the
        data raised while the loop looked ahead is raised here, in its turn."""
        if self.buffer:
            return self.buffer.popleft()
        if self.exhausted:
            return END  # type: ignore[no-any-return]
        failure = self.failure
        if failure is not None:
            self.failure = None
            self.exhausted = True
            raise failure
        assert self.iterator is not None
        batch = next(self.iterator, END)
        if batch is END:
            self.exhausted = True
        return batch

    def _look_ahead(self) -> bool:
        """Read one batch into the look-ahead; False when the pass has ended or the data
        raised (the error waits in ``failure`` for its turn: ``take``)."""
        assert self.iterator is not None
        try:
            batch = next(self.iterator, END)
        except Exception as error:  # any error of the data: raised in its turn
            self.failure = error
            return False
        if batch is END:
            self.exhausted = True
            return False
        self.buffer.append(batch)
        return True

    def has_next(self) -> bool:
        """Whether the pass has a batch after the one just taken (a look-ahead of one);
        True when what comes next is an error of the data."""
        if self.buffer or self.failure is not None:
            return True
        if self.exhausted:
            return False
        return self._look_ahead() or self.failure is not None

    def count_after(self, step: int, window: int) -> tuple[int, bool]:
        """For an agreement at ``step``: how many batches this process can yield after it
        (exact for sized data; else looked ahead, at most ``window``), and whether it may
        have more than it counted."""
        if self.sized:
            return max(0, self.local_last - step), False
        buffer = self.buffer
        if self.local_last == NEVER:
            while (
                len(buffer) < window
                and not self.exhausted
                and self.failure is None
                and self._look_ahead()
            ):
                pass
            if self.exhausted:
                self.local_last = step + len(buffer)
        if self.local_last != NEVER:
            return max(0, self.local_last - step), False
        if self.failure is not None:
            # The data raised: this process stops where it does, so it must not make the
            # others end early (fewer than ``window`` would say that its data ended).
            return window, True
        return len(buffer), True

    def settle(self, step: int, window: int, agreed: Agreed) -> None:
        """Take the agreed count: the pass ends ``agreed.batches`` steps after ``step`` when
        that is certain, else it goes on at least to the next agreement."""
        exact = not agreed.unknown or (not self.longest and agreed.batches < window)
        self.pass_last = step + agreed.batches if exact else NEVER
        self.end = min(self.pass_last, self.cut_last)

    # ------------------------------------------------------------------ where things end

    def ends(self, step: int, *, final: bool, last_epoch: bool) -> tuple[bool, bool]:
        """(epoch end, data end) at ``step``. Without a sync, unsized data is looked at one
        batch ahead, except that a one-shot stream is not read past a step on which the run
        ends anyway (``final``, or the end of the ``last_epoch``'s cut): its next batch
        stays in the stream (SPEC rule 24)."""
        if self.one_shot:
            final = final or (last_epoch and step == self.cut_last)
            if self.synced:
                # Agreed values only, so that every process yields the same events; on a
                # step a limit ends, as without a sync, the end of the data is not looked
                # for (the stream's end then makes no EPOCH_END).
                data_end = not final and step == self.pass_last
            elif self.exhausted or self.buffer or not final:
                data_end = not self.has_next()
            else:
                data_end = False
            return step == self.cut_last or (self.cut is None and data_end), data_end
        if self.synced or self.sized:
            return step == self.pass_last, False
        return not self.has_next(), False

    def padding(self, step: int) -> bool:
        """Whether ``step`` is a padding step: this process's pass has ended, the agreed
        one (``uneven="longest"``) has not."""
        return self.longest and step > self.local_last

    def next_end(self, step: int) -> int:
        """The next step after ``step`` that must be decided for the data's sake: the end of
        the pass or cut epoch (``end``), and the first and every padding step."""
        next_step = self.end
        if self.longest and self.local_last < next_step:
            next_step = min(next_step, max(self.local_last + 1, step + 1))
        return next_step

    def leave_unused(self, step: int, epoch: int) -> None:
        """Warn when this process's pass had batches left where the agreed one ended at
        ``step`` (``uneven="shortest"``, SPEC rule 28)."""
        if not self.synced or self.longest:
            return
        if self.sized:
            unused, exact = self.local_last - step, True
        else:
            unused, exact = len(self.buffer), self.exhausted
            if not exact and not unused:
                # Nothing was read ahead here; whether the data had more is not known.
                return
        if unused <= 0:
            return
        amount = n_batches(unused) if exact else f"at least {n_batches(unused)}"
        if self.one_shot:
            warn(
                f"this process's stream had {amount} more when the run ended at step {step}, "
                f'where another process\'s stream ended (uneven="shortest"); the '
                f"{n_batches(len(self.buffer))} read ahead to agree on that end are not yielded"
            )
        else:
            warn(
                f"this process leaves {amount} of epoch {epoch} unused: another process's "
                f'epoch ended first, at step {step} (uneven="shortest"; uneven="longest" '
                "pads instead)"
            )


def n_batches(count: int) -> str:
    """``count`` batches, in words: "1 batch", "3 batches"."""
    return f"{count} batch" if count == 1 else f"{count} batches"


def _padded(batches: Iterator[T], count: int, epoch: int, *, check_more: bool) -> Iterator[Any]:
    """``count`` batches of ``batches`` (exactly), then None forever: the epoch of a process
    that pads until the agreed end (``uneven="longest"``) over data of known length."""
    for taken in range(count):
        batch = next(batches, END)
        if batch is END:
            raise ValueError(
                f"data yielded {n_batches(taken)} in epoch {epoch} after the resumed position, "
                f"fewer than the {count} its length promises"
            )
        yield batch
    if check_more and count >= 0 and next(batches, END) is not END:
        raise ValueError(
            f"data yielded more batches in epoch {epoch} than its len(): give epoch_length= "
            "to cut every epoch at a fixed length, or fix __len__"
        )
    while True:
        yield None
