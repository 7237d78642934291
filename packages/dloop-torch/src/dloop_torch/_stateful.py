"""A torchdata ``StatefulDataLoader`` over an IterableDataset: resume from its own state.

Such a loader cannot skip by index; its ``state_dict()`` is what lets it continue without
reading again what was done (the dataset's own state, when the dataset has
``state_dict``/``load_state_dict``). The loop may have read a few batches ahead of the
step being saved (to find the epoch's last batch, or for an agreement across processes),
so the loader's state is kept after each of the last batches it handed out, and the
resume takes the one at the loop's position (the ``start`` of ``iter_from``).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Generator, Iterator
from itertools import islice
from typing import Any

import torch

from dloop_torch._jsonable import from_json, to_json

WINDOW = 8
"""How many positions' states a state dict carries: the loop reads at most this many
batches ahead without costing a resume anything; beyond, the difference is read again."""


class StatefulPositions:
    """The states of a ``StatefulDataLoader`` after each of the last batches it gave."""

    __slots__ = ("_epoch", "_loaded", "_states", "loader")

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._states: deque[tuple[int, Any]] = deque(maxlen=WINDOW)
        self._epoch = 0
        self._loaded: tuple[int, list[tuple[int, Any]]] | None = None

    def iterate(self, epoch: int, start: int) -> Iterator[Any]:
        """The batches of ``epoch`` from batch ``start`` on.

        After ``load_state_dict``, the loader's state saved at the latest position at or
        before ``start`` is loaded, and only the batches between it and ``start`` are
        read and dropped; torch's global generator is left as it was.

        Raises:
            ValueError: The epoch ends before batch ``start``.
        """
        loaded, self._loaded = self._loaded, None
        self._epoch = epoch
        self._states.clear()
        position = 0
        user_state = torch.get_rng_state()
        try:
            if start and loaded is not None and loaded[0] == epoch:
                usable = [saved for saved in loaded[1] if saved[0] <= start]
                if usable:
                    position, state = max(usable, key=lambda saved: saved[0])
                    self.loader.load_state_dict(state)
            batches = iter(self.loader)
            dropped = sum(1 for _ in islice(batches, start - position))
        finally:
            if start:
                torch.set_rng_state(user_state)  # the resume's draws are not the user's
        if dropped < start - position:
            raise ValueError(
                f"cannot resume at batch {start} of the epoch: the data yielded only "
                f"{position + dropped} batches in it"
            )
        return self._recording(batches, start)

    def _recording(self, batches: Iterator[Any], position: int) -> Generator[Any, None, None]:
        for batch in batches:
            position += 1
            # A copy: a dataset's state_dict() may hand out its live state.
            self._states.append((position, copy.deepcopy(self.loader.state_dict())))
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The epoch and the loader's states at the last positions, as JSON values."""
        return {
            "epoch": self._epoch,
            "positions": [[position, to_json(state)] for position, state in self._states],
        }

    def load_state_dict(self, state: object) -> None:
        """Take back what ``state_dict`` gave, for the next ``iterate``.

        Raises:
            ValueError: ``state`` is not such a part.
        """
        if not (
            isinstance(state, dict)
            and isinstance(state.get("epoch"), int)
            and isinstance(state.get("positions"), list)
            and all(
                isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                for item in state["positions"]
            )
        ):
            raise ValueError(
                "state dict data['stateful'] must be {'epoch': int, 'positions': "
                f"[[int, state], ...]}} as dloop_torch saves it, got {state!r}"
            )
        self._loaded = (
            state["epoch"],
            [(position, from_json(saved)) for position, saved in state["positions"]],
        )
