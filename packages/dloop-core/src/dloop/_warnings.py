"""``LoopWarning`` and the helper that points warnings at the user's own line."""

from __future__ import annotations

import sys
import warnings


class LoopWarning(UserWarning):
    """Something about a run's data or configuration that dloop handled, but that changes
    what the run trains on: a stream that ended before a limit, batches a process leaves
    unused because another process had fewer, an order a resume cannot reproduce.

    Silence one kind with ``warnings.filterwarnings("ignore", category=dloop.LoopWarning,
    message="...")``, or turn them into errors in tests.
    """


def warn(message: str) -> None:
    """Warn with ``LoopWarning``, attributed to the first caller outside dloop (the user's
    ``for`` loop), whichever path of the loop (C or Python) raised it."""
    level = 2  # for warnings.warn, 1 is this function and 2 the one that called it
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("dloop."):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, LoopWarning, stacklevel=level)
