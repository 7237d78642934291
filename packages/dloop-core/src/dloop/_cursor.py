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
        self._close_pass(epoch - 1)
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
        self.opened = True
        self.local_last = NEVER if length is None else first + length - 1
        self.pass_last = NEVER if self.synced else self.local_last
        self.end = self.pass_last
        self.iterator = self._epoch_iterator(epoch, skip, length)
        return length

    def _epoch_iterator(self, epoch: int, skip: int, length: int | None) -> Iterator[T]:
        if self.longest and length is not None:
            batches = self._skipped(epoch, min(skip, length))
            return _padded(batches, length - skip, epoch, check_more=self.cut is None)
        return self._skipped(epoch, skip)

    def _skipped(self, epoch: int, skip: int) -> Iterator[T]:
        """The epoch's iterator after its first ``skip`` batches: from ``iter_from(skip)``
        when the data has it (adapters skip without loading), else read and dropped."""
        data = self.data
        if not skip:
            return iter(data)
        iter_from = getattr(data, ITER_FROM, None)
        if callable(iter_from):
            return iter(iter_from(skip))
        iterator = iter(data)
        dropped = sum(1 for _ in islice(iterator, skip))
        if dropped < skip:
            if self.longest:  # this process's epoch ended before the resumed step: padding
                self.exhausted = True
                self.local_last = self.first + dropped - 1
                return iter(())
            raise ValueError(
                f"cannot resume: data yielded {dropped} batches in epoch {epoch}, but the "
                f"state dict says {skip} were already done"
            )
        return iterator

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
                f"cannot resume: the one-shot data gave {dropped} batches, but the state dict "
                f"says {done} were already done (a resumed run reads a one-shot stream from "
                "its beginning and drops the batches of every step done)"
            )

    def _close_pass(self, epoch: int) -> None:
        """Before the next epoch: data whose length came from len() must not have yielded
        more batches than that (SPEC rule 25), when its whole epoch was used."""
        iterator = self.iterator
        self.iterator = None
        if (
            iterator is None
            or self.cut is not None
            or self.length is None
            or self.longest
            or self.pass_last != self.local_last
        ):
            return
        if next(iterator, END) is not END:
            raise ValueError(
                f"data yielded more batches in epoch {epoch} than its len() = {self.length}: "
                "give epoch_length= to cut every epoch at a fixed length, or fix __len__"
            )

    # ------------------------------------------------------------------ taking batches

    def take(self) -> T:
        """The next batch of the pass (from the look-ahead first), or END."""
        if self.buffer:
            return self.buffer.popleft()
        if self.exhausted:
            return END  # type: ignore[no-any-return]
        assert self.iterator is not None
        batch = next(self.iterator, END)
        if batch is END:
            self.exhausted = True
        return batch

    def has_next(self) -> bool:
        """Whether the pass has a batch after the one just taken (a look-ahead of one)."""
        if self.buffer:
            return True
        if self.exhausted:
            return False
        assert self.iterator is not None
        batch = next(self.iterator, END)
        if batch is END:
            self.exhausted = True
            return False
        self.buffer.append(batch)
        return True

    def count_after(self, step: int, window: int) -> tuple[int, bool]:
        """For an agreement at ``step``: how many batches this process can yield after it
        (exact for sized data; else looked ahead, at most ``window``), and whether it may
        have more than it counted."""
        if self.sized:
            return max(0, self.local_last - step), False
        buffer = self.buffer
        if self.local_last == NEVER:
            iterator = self.iterator
            assert iterator is not None
            while len(buffer) < window and not self.exhausted:
                batch = next(iterator, END)
                if batch is END:
                    self.exhausted = True
                else:
                    buffer.append(batch)
            if self.exhausted:
                self.local_last = step + len(buffer)
        if self.local_last != NEVER:
            return max(0, self.local_last - step), False
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
            if self.synced or self.exhausted or self.buffer or not final:
                data_end = step == self.pass_last if self.synced else not self.has_next()
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
        amount = _batches(unused) if exact else f"at least {_batches(unused)}"
        if self.one_shot:
            warn(
                f"this process's stream had {amount} more when the run ended at step {step}, "
                f'where another process\'s stream ended (uneven="shortest"); the '
                f"{_batches(len(self.buffer))} read ahead to agree on that end are not yielded"
            )
        else:
            warn(
                f"this process leaves {amount} of epoch {epoch} unused: another process's "
                f'epoch ended first, at step {step} (uneven="shortest"; uneven="longest" '
                "pads instead)"
            )


def _batches(count: int) -> str:
    return f"{count} batch" if count == 1 else f"{count} batches"


def _padded(batches: Iterator[T], count: int, epoch: int, *, check_more: bool) -> Iterator[Any]:
    """``count`` batches of ``batches`` (exactly), then None forever: the epoch of a process
    that pads until the agreed end (``uneven="longest"``) over data of known length."""
    for taken in range(count):
        batch = next(batches, END)
        if batch is END:
            raise ValueError(
                f"data yielded {taken} batches in epoch {epoch} after the resumed position, "
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
