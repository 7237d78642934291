"""``Loop``: iterate batches, count steps, epochs and time, and say which events fire."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Generator, Hashable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from dloop._agreement import Agreement
from dloop._budget import TimeBudget
from dloop._cursor import DataCursor
from dloop._event import Event
from dloop._loop_events import LoopEvent
from dloop._order_warning import warn_if_order_differs
from dloop._resume import load_state_dict, state_dict
from dloop._run import Run, RunIterator
from dloop._schedule import Schedule
from dloop._signals import StopSignals, as_signals
from dloop._state import LoopState
from dloop._sync import Sync
from dloop._validation import as_count, as_seconds

T = TypeVar("T")

UNEVEN = ("shortest", "longest")
"""What ``uneven=`` takes: with a ``sync``, whether epochs end where the shortest process's
data ends (training) or the longest's, the others padding (evaluation)."""


class Loop(Generic[T]):
    """Iterate ``data`` for a run and say which events fire on each batch.

    ``for batch, events in Loop(data, max_epochs=3, events={...}):`` yields every batch
    the run should see, re-iterating ``data`` for each epoch, with a frozenset of the
    event keys (and ``LoopEvents`` members) that fire on that batch.

    Args:
        data: Any re-iterable of batches (a list, a torch DataLoader, a tf.data.Dataset,
            ...), or a one-shot iterator (``iter(data) is data``) for a single pass, whose
            end ends the run: its last batch carries ``TRAINING_END``, and a
            ``LoopWarning`` says which limit was not reached. If it has a callable
            ``set_epoch``, that is called with the epoch number before each pass. If it
            has a callable ``iter_from(start)``, a resumed epoch is iterated from there
            instead of skipping ``start`` batches. If it has ``dloop_state_dict()`` and
            ``dloop_load_state_dict(state)`` (adapters such as ``dloop_torch.prepare``
            do), the first gives the data's own part of ``state_dict()`` (JSON built-in
            values: what the data needs beyond the position, such as a shuffling
            generator's state) and the second takes it back in ``load_state_dict``.
        max_epochs: Stop after this many epochs (an int >= 1).
        max_steps: Stop after this many steps (an int >= 1).
        max_seconds: Stop when the next step would end past this many seconds of
            ``clock`` (a finite number > 0): the last batch is the first at which
            elapsed plus the expected duration of a step (the median of recent steps,
            not counting the first step after a start or resume) reaches it.
        events: Named events: a mapping from any hashable key (not a ``LoopEvents``
            member) to an ``Event``.
        epoch_length: Batches per epoch: every epoch ends after that many. Defaults to
            ``len(data)``, read at the start of every epoch (after ``set_epoch``); without
            either, the loop looks one batch ahead to find the last batch of each epoch.
        clock: Seconds as a number, monotonic; ``time.monotonic`` by default. Tests pass
            a ``dloop.testing.ManualClock``. A reading that goes back counts as no time
            passing; one that is not a finite number is an error on that step.
        sync: Agreement across processes (see ``dloop.Sync``), or None for one process.
            Its ``every_n_steps`` is read once, here.
        stop_signals: Signals that ask a process to stop (for example
            ``(signal.SIGTERM, signal.SIGUSR1)``) whose arrival requests a stop, while the
            loop runs; the previous handlers come back as soon as the final batch is
            yielded or the loop is closed or freed.
        uneven: With a ``sync``, where epochs end when the processes' data differ in
            length: ``"shortest"`` (default, for training) ends every process's epoch on
            the step where the shortest process's ends; ``"longest"`` (for evaluation)
            ends it where the longest's ends, the other processes yielding
            ``(None, events)`` steps with ``LoopEvents.PADDING`` until then. Without a
            sync it changes nothing.

    At least one of ``max_epochs``, ``max_steps`` and ``max_seconds`` is required; with
    several, the first reached ends the run. Counts are ints below 2**62 and times are
    below 1e12 seconds (see the docs' "Limits and edge cases").

    Raises:
        TypeError, ValueError: At construction, for bad arguments; the message names the
            argument, the value and what is accepted.
        ValueError: While iterating, when re-iterable data yields no batch in an epoch,
            fewer batches than its epoch length or more than its ``len()`` (the message
            names the epoch), when a clock reading is not a finite number, or when a
            ``sync`` returns something other than an element-wise maximum.
    """

    __slots__ = ("_events", "_iterator", "_run", "_settle")

    def __init__(
        self,
        data: Iterable[T],
        *,
        max_epochs: int | None = None,
        max_steps: int | None = None,
        max_seconds: float | None = None,
        events: Mapping[Any, Event] | None = None,
        epoch_length: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sync: Sync | None = None,
        stop_signals: Collection[int] = (),
        uneven: str = "shortest",
    ) -> None:
        if not (hasattr(type(data), "__iter__") or hasattr(type(data), "__getitem__")):
            raise TypeError(f"data must be iterable, got {data!r} (a {type(data).__name__})")
        if max_epochs is None and max_steps is None and max_seconds is None:
            raise ValueError(
                "Loop needs a stopping condition: give max_epochs, max_steps or max_seconds"
            )
        if max_epochs is not None:
            max_epochs = as_count("max_epochs", max_epochs)
        if max_steps is not None:
            max_steps = as_count("max_steps", max_steps)
        if max_seconds is not None:
            max_seconds = as_seconds("max_seconds", max_seconds, allow_zero=False)
        if epoch_length is not None:
            epoch_length = as_count("epoch_length", epoch_length)
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        if uneven not in UNEVEN:
            raise ValueError(f"uneven must be one of {UNEVEN}, got {uneven!r}")
        self._events = _check_events(events)
        signals = StopSignals(as_signals(stop_signals))

        # iter() of an iterator is a cheap identity; it is not called on other data (on a
        # DataLoader it would start worker processes).
        one_shot = isinstance(data, Iterator) and iter(data) is data
        if (
            one_shot
            and epoch_length is None
            and max_steps is None
            and max_seconds is None
            and max_epochs is not None
            and max_epochs > 1
        ):
            raise ValueError(
                f"max_epochs={max_epochs} needs {max_epochs} passes over data, but data is a "
                "one-shot iterator that gives one: pass a re-iterable (a list, a DataLoader, "
                "...), or give epoch_length to cut the stream into epochs"
            )
        cursor = DataCursor(
            data,
            epoch_length=epoch_length,
            one_shot=one_shot,
            synced=sync is not None,
            longest=uneven == "longest",
        )
        if cursor.length_hint == 0 and sync is None:
            raise ValueError(f"data yielded no batch in epoch 0: it is empty ({data!r})")
        agreement = None
        if sync is not None:
            config = _configuration(
                self._events, one_shot, epoch_length, max_epochs, max_steps, max_seconds
            )
            agreement = Agreement(sync, longest=uneven == "longest", config=config)
        self._run: Run[T] = Run(
            cursor,
            max_epochs=max_epochs,
            max_steps=max_steps,
            budget=TimeBudget(clock, max_seconds),
            schedule=Schedule(self._events),
            agreement=agreement,
            signals=signals,
        )
        self._iterator: RunIterator[T] | None = None
        # The C accelerator keeps the position of quiet steps to itself; this puts it on
        # the run before anything here reads it. None for the pure-Python generator.
        self._settle: Callable[[], None] | None = None

    def __iter__(self) -> Iterator[tuple[T, frozenset[Hashable]]]:
        """The run's iterator; iterating again after a ``break`` continues the run."""
        if self._iterator is None:
            self._iterator = self._run.iterator()
            self._settle = getattr(self._iterator, "settle", None)
        return self._iterator

    def __len__(self) -> int:
        """The number of batches this loop will yield, when known in advance.

        Known with ``max_steps``, or ``max_epochs`` and a known epoch length (the smaller
        when both); after ``load_state_dict``, the batches still to come.

        Raises:
            TypeError: When it is not known, so that progress bars show no total.
        """
        run = self._settled_run()
        total = run.total_steps()
        if total is None:
            raise TypeError(
                "len(loop) is unknown: give max_steps, or max_epochs with data that has a "
                "len() or with epoch_length"
            )
        if not run.started and run.ends_before_start():
            return 0
        return max(0, total - run.resumed_step - 1)  # at most 2**62 (rule 22): never overflows

    def __bool__(self) -> bool:
        """Always True, as in dloop 0.1.0: ``if loop:`` never asks for ``len(loop)``."""
        return True

    def __enter__(self) -> Loop[T]:
        """``with Loop(...) as loop:`` closes the loop on exit (see ``close``)."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def state(self) -> LoopState:
        """The ``LoopState`` of the batch just yielded."""
        return self._settled_run().state()

    @property
    def events(self) -> Mapping[Hashable, Event]:
        """The named events of this loop."""
        return dict(self._events)

    def request_stop(self) -> None:
        """End the run early: the next batch yielded is the last, with ``TRAINING_END``
        and ``INTERRUPTED``. Only sets a flag, so it is safe in a signal handler.

        With a ``sync``, the stop takes effect on the next agreement step, on every
        process at once.
        """
        self._run.request_stop()

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot to resume from; inside the body of step ``s`` it
        means "steps 0..s are done"."""
        return state_dict(self._settled_run())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state``: the next batch is step ``s + 1``, with epoch, epoch_step
        and elapsed time continuing, and once-events that fired never firing again.

        Raises:
            RuntimeError: When the loop has already started.
            TypeError, ValueError: For a malformed state dict, one from another version
                of dloop, or one incompatible with this loop; the message says which.
        """
        if self._run.started:
            raise RuntimeError("load_state_dict must be called before iterating the loop")
        load_state_dict(self._run, state)
        warn_if_order_differs(self._run.cursor.data, state)

    def close(self) -> None:
        """Stop iterating and put back stop-signal handlers; the loop yields nothing more."""
        if self._iterator is not None:
            self._iterator.close()
        else:
            self._iterator = _finished()
        self._run.signals.restore()
        self._run.finished = True

    def _settled_run(self) -> Run[T]:
        """The run, with the position of the last quiet step on it (the C accelerator
        keeps that to itself until asked)."""
        if self._settle is not None:
            self._settle()
        return self._run

    def __repr__(self) -> str:
        run = self._settled_run()
        return (
            f"Loop(step={run.step}, epoch={run.epoch}, events={list(self._events)!r}, "
            f"finished={run.finished})"
        )


def _check_events(events: Mapping[Any, Event] | None) -> dict[Hashable, Event]:
    if events is None:
        return {}
    if not isinstance(events, Mapping):
        raise TypeError(f"events must be a mapping of names to Event, got {events!r}")
    checked: dict[Hashable, Event] = {}
    for key, event in events.items():
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"events key {key!r} is unhashable; use a string") from None
        if isinstance(key, LoopEvent):
            raise ValueError(
                f"events key {key!r} is a built-in event the loop emits by itself; "
                "choose another name"
            )
        if not isinstance(event, Event):
            raise TypeError(
                f"events[{key!r}] must be an Event, got {event!r} (a {type(event).__name__})"
            )
        checked[key] = event
    return checked


def _configuration(
    events: Mapping[Hashable, Event],
    one_shot: bool,
    epoch_length: int | None,
    max_epochs: int | None,
    max_steps: int | None,
    max_seconds: float | None,
) -> str:
    """What every process of a run must agree on, as text (its CRC is sent with every
    agreement): the kind of data, the limits and the event triggers (not their keys, whose
    reprs may differ between processes, and not condition functions)."""
    triggers = sorted(
        repr((e.every_n_steps, e.at_step, e.every_n_epochs, e.every_n_seconds, e.at_time))
        for e in events.values()
    )
    return repr((one_shot, epoch_length, max_epochs, max_steps, max_seconds, triggers))


def _finished() -> Generator[Any, None, None]:
    yield from ()
