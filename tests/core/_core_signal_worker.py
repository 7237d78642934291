"""Runs one stop-signal scenario in its own process and prints what it saw as JSON.

Usage: ``python _core_signal_worker.py SCENARIO``. Signals go to this process only, so a
broken handler cannot take the test runner down.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from _core_reference import named

from dloop import Loop

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
previous_calls: list[int] = []


def previous_handler(signum: int, frame: FrameType | None) -> None:
    """The handler the program had before the loop; the loop must put it back."""
    previous_calls.append(signum)


def handlers() -> dict[str, str]:
    """Which handler each stop signal has now: the previous one, the default or another."""
    names = {}
    for sig in STOP_SIGNALS:
        handler = signal.getsignal(sig)
        if handler is previous_handler:
            names[sig.name] = "previous"
        elif handler == signal.SIG_DFL:
            names[sig.name] = "default"
        else:
            names[sig.name] = "other"
    return names


def signal_mid_run(sig: signal.Signals) -> dict[str, Any]:
    """Send ``sig`` to this process in the body of step 3 of a 100-step run."""
    steps = []
    loop = Loop(range(100), max_steps=100, stop_signals=STOP_SIGNALS)
    for _, events in loop:
        steps.append(
            {
                "step": loop.state.step,
                "events": named(events),
                "handlers": handlers(),
            }
        )
        if loop.state.step == 3:
            os.kill(os.getpid(), sig)
    return {"steps": steps, "after": handlers()}


def limit_ends_the_run() -> dict[str, Any]:
    """A run that max_steps ends puts the handlers back on its final batch."""
    seen = []
    loop = Loop(range(10), max_steps=3, stop_signals=STOP_SIGNALS)
    for _ in loop:
        seen.append(handlers())
    return {"steps": seen, "after": handlers()}


def close() -> dict[str, Any]:
    """``loop.close()`` after a ``break`` puts the handlers back."""
    loop = Loop(range(10), max_steps=10, stop_signals=STOP_SIGNALS)
    for _ in loop:
        if loop.state.step == 1:
            break
    during = handlers()
    loop.close()
    return {"during": during, "after": handlers(), "more": [batch for batch, _ in loop]}


class WeaklyReferableLoop(Loop[int]):
    """A ``Loop`` (which has ``__slots__``) that a weak reference can watch."""


def garbage_collected() -> dict[str, Any]:
    """Dropping a loop that was left mid-run frees it and puts the handlers back."""
    loop = WeaklyReferableLoop(range(10), max_steps=10, stop_signals=STOP_SIGNALS)
    for _ in loop:
        if loop.state.step == 1:
            break
    during = handlers()
    alive = weakref.ref(loop)
    del loop
    freed_without_collector = alive() is None
    gc.collect()
    after = handlers()
    os.kill(os.getpid(), signal.SIGTERM)  # now reaches the previous handler
    return {
        "during": during,
        "after": after,
        "freed": alive() is None,
        "freed_without_collector": freed_without_collector,
        "previous_calls": previous_calls,
    }


def not_installed_before_iterating() -> dict[str, Any]:
    """Constructing a loop does not take the signals yet."""
    loop = Loop(range(3), max_steps=3, stop_signals=STOP_SIGNALS)
    before = handlers()
    iterator = iter(loop)
    next(iterator)
    during = handlers()
    loop.close()
    return {"before": before, "during": during, "after": handlers()}


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "sigterm": lambda: signal_mid_run(signal.SIGTERM),
    "sigusr1": lambda: signal_mid_run(signal.SIGUSR1),
    "limit": limit_ends_the_run,
    "close": close,
    "gc": garbage_collected,
    "not_before": not_installed_before_iterating,
}


def main() -> None:
    signal.signal(signal.SIGTERM, previous_handler)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    print(json.dumps(SCENARIOS[sys.argv[1]]()))


if __name__ == "__main__":
    main()
