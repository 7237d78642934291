"""The built-in events every loop emits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Final, final


@final
class LoopEvent:
    """One built-in event, such as ``LoopEvents.EPOCH_END``: a singleton compared by
    identity, so it can never equal a user's event key."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"LoopEvents.{self.name}"

    def __reduce__(self) -> tuple[object, tuple[object, str]]:
        return getattr, (LoopEvents, self.name)  # unpickles as the same singleton


class _LoopEventsType(type):
    """Lets ``LoopEvents`` be iterated like an enum: ``list(LoopEvents)``."""

    _members: tuple[LoopEvent, ...]

    def __iter__(cls) -> Iterator[LoopEvent]:
        return iter(cls._members)

    def __len__(cls) -> int:
        return len(cls._members)


class LoopEvents(metaclass=_LoopEventsType):
    """Events the loop emits by itself, next to the named events of ``events=``.

    Test them with ``LoopEvents.EPOCH_END in events``. The members are ``LoopEvent``
    singletons: they iterate like an enum (``list(LoopEvents)``), compare by identity,
    pickle as themselves, and no user key can equal them. (They are not ``enum``
    members because looking one up is several times slower on Python 3.11, and user
    code does it on every step.)
    """

    EPOCH_START: Final = LoopEvent("EPOCH_START")
    """On the first batch of every epoch (not on a resume in the middle of an epoch)."""

    EPOCH_END: Final = LoopEvent("EPOCH_END")
    """On the last batch of every epoch; not on a run cut short inside an epoch."""

    TRAINING_END: Final = LoopEvent("TRAINING_END")
    """On the last batch the loop yields, exactly once, whatever ended the run."""

    INTERRUPTED: Final = LoopEvent("INTERRUPTED")
    """With ``TRAINING_END`` when a stop request (or a stop signal) ended the run."""

    PADDING: Final = LoopEvent("PADDING")
    """On a step that has no batch (``None``) on this process: with ``uneven="longest"``
    and a ``sync``, a process whose data ended pads until the longest process's ends."""

    _members: ClassVar[tuple[LoopEvent, ...]] = (
        EPOCH_START,
        EPOCH_END,
        TRAINING_END,
        INTERRUPTED,
        PADDING,
    )

    def __init__(self) -> None:
        raise TypeError("LoopEvents is a namespace of built-in events; it has no instances")
