"""The agreement protocol that makes every process take time decisions on the same step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Sync(Protocol):
    """What ``Loop(sync=...)`` accepts: agreement among the processes of one run.

    The loop calls ``combine`` on every step ``s`` with ``(s + 1) % every_n_steps == 0``,
    on every process, always with a sequence of the same length. Time-based events,
    ``max_seconds`` and stop requests take effect only on those steps, decided from the
    combined values, so every process yields the same events on the same step.

    ``dloop.testing.ThreadSync`` is an in-process implementation; ``dloop_torch`` and
    ``dloop_jax`` ship ones over ``torch.distributed`` and JAX's multi-process runtime.
    """

    @property
    def every_n_steps(self) -> int:
        """How often to agree, in steps (an int >= 1)."""
        ...

    def combine(self, flags: Sequence[int]) -> Sequence[int]:
        """Return the element-wise maximum of ``flags`` over all processes.

        The values are non-negative ints below 2**62; the result has the same length.
        """
        ...
