"""Types of the optional C accelerator (``_speedups.c``); see ``Run.iterator``."""

from collections.abc import Hashable
from typing import Any

from dloop._run import Run

class Stepper:
    """Iterate a run over sized data like ``_steps.sized_steps(run)``, quiet steps in C."""

    def __init__(self, run: Run[Any], empty: frozenset[Hashable], /) -> None: ...
    def __iter__(self) -> Stepper: ...
    def __next__(self) -> tuple[Any, frozenset[Hashable]]: ...
    def close(self) -> None:
        """End the iteration and put back stop-signal handlers."""
    def settle(self) -> None:
        """Put the step and clock reading of the last step returned on the run."""
    @property
    def step(self) -> int:
        """The last step returned (-1 before any)."""
    @property
    def finished(self) -> bool:
        """Whether the iteration has ended."""
