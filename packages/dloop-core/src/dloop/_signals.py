"""Opt-in stop signals: the handler only requests a stop; old handlers come back."""

from __future__ import annotations

import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

_Handler = Callable[[int, FrameType | None], Any] | int | None


_STOP_SIGNAL_NAMES = (
    "SIGTERM",
    "SIGINT",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGXCPU",
    "SIGALRM",
    "SIGVTALRM",
    "SIGPROF",
    "SIGPWR",
    "SIGBREAK",
)
"""Signals that ask a process to stop (schedulers send SIGTERM, SIGUSR1, SIGXCPU, ...);
the real-time signals SIGRTMIN..SIGRTMAX are accepted too."""

_FAULT_SIGNAL_NAMES = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP", "SIGSYS")
"""Signals of a fault: a Python handler returns to the faulting instruction, which faults
again, forever."""


def _stop_signals() -> frozenset[int]:
    accepted = {getattr(signal, name) for name in _STOP_SIGNAL_NAMES if hasattr(signal, name)}
    low, high = getattr(signal, "SIGRTMIN", None), getattr(signal, "SIGRTMAX", None)
    if low is not None and high is not None:
        accepted.update(range(low, high + 1))
    return frozenset(int(sig) for sig in accepted)


STOP_SIGNALS = _stop_signals()


def as_signals(value: object) -> tuple[signal.Signals, ...]:
    """Validate ``stop_signals``: signals that ask a process to stop, usable here.

    Raises:
        TypeError: Not a collection of ints.
        ValueError: Not a signal number, a fault signal (SIGSEGV, SIGBUS, ...), one that
            cannot be caught (SIGKILL, SIGSTOP), another signal that does not ask to stop
            (SIGCHLD, SIGWINCH, ...), or given from a thread other than the main one.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            "stop_signals must be a collection of signals such as "
            f"(signal.SIGTERM, signal.SIGUSR1), got {value!r}"
        )
    result: list[signal.Signals] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"stop_signals item must be a signal number, got {item!r}")
        try:
            sig = signal.Signals(item)
        except ValueError:
            raise ValueError(f"stop_signals item {item!r} is not a signal number") from None
        if int(sig) not in STOP_SIGNALS:
            raise ValueError(f"stop_signals item {sig.name} {_why_not(sig)}")
        result.append(sig)
    if result:
        check_main_thread()
    return tuple(dict.fromkeys(result))


def _why_not(sig: signal.Signals) -> str:
    accepted = ", ".join(name for name in _STOP_SIGNAL_NAMES if hasattr(signal, name))
    if sig.name in _FAULT_SIGNAL_NAMES:
        reason = (
            "reports a fault (a handler in Python would return to the faulting instruction "
            "and loop forever)"
        )
    elif sig.name in ("SIGKILL", "SIGSTOP"):
        reason = "cannot be caught"
    else:
        reason = "does not ask a process to stop"
    return f"{reason}; stop_signals takes {accepted} and the real-time signals"


def check_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        raise ValueError(
            "stop_signals can only be installed from the main thread (Python delivers "
            f"signals there), but this is thread {threading.current_thread().name!r}"
        )


class StopSignals:
    """Installs handlers that call ``request_stop`` on a loop it holds only weakly.

    Once restored (or once its loop is gone), a handler that is still installed, because
    another loop or library installed its own on top and put ours back later, passes the
    signal on to the handler it replaced, so that nesting never leaves a signal ignored.
    """

    __slots__ = ("__weakref__", "_active", "_handler", "_previous", "_signals")

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self._signals = signals
        self._previous: dict[int, _Handler] = {}
        self._handler: Callable[[int, FrameType | None], None] | None = None
        self._active = False

    def install(self, request_stop: Callable[[], None]) -> None:
        """Install a handler for every signal that calls ``request_stop`` (held weakly)."""
        if not self._signals or self._handler is not None:
            return
        check_main_thread()
        target = weakref.WeakMethod(request_stop)
        previous = self._previous
        owner = weakref.ref(self)

        def handler(signum: int, frame: FrameType | None) -> None:
            method = target()
            this = owner()
            if method is not None and this is not None and this._active:
                method()
            else:
                _pass_on(previous.get(signum), signum, frame)

        self._handler = handler
        self._active = True
        for sig in self._signals:
            previous[sig] = signal.signal(sig, handler)

    def restore(self) -> None:
        """Put the previous handlers back (once); safe to call again, from GC or from
        another thread (where only the main thread could reinstall them, our handler
        passes signals on instead)."""
        if not self._active:
            return
        self._active = False
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) is self._handler:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _pass_on(handler: _Handler, signum: int, frame: FrameType | None) -> None:
    """Do what ``handler`` (the one ours replaced) would have done with the signal."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_IGN:
        return
    else:  # SIG_DFL, or a handler installed from C (None): the default action
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
