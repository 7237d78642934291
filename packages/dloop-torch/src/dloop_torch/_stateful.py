"""A torchdata ``StatefulDataLoader`` over an IterableDataset: resume from its own state.

Such a loader cannot skip by index; its ``state_dict()`` is what lets it continue without
reading again what was done (the dataset's own state, when the dataset has
``state_dict``/``load_state_dict``). The loader's state is taken after every batch it
hands out, but the state dict needs it at the loop's position, and the loop takes batches
ahead of the step being saved: ``prepare``'s device prefetch takes ``prefetch`` more, and
the loop itself one (to find the epoch's end) or, with a ``sync``, up to
``sync.every_n_steps`` (to agree on the next stretch). So the states are kept from
``LOOK_AHEAD`` batches before the last one the loop took (counted exactly, after any
prefetch) up to the newest, and the resume takes the one at the loop's position (the
``start`` of ``iter_from``); older ones are thinned to every ``LOOK_AHEAD``-th position.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Generator, Iterator
from itertools import islice
from typing import Any

import torch

from dloop_torch._jsonable import from_json, to_json

LOOK_AHEAD = 64
"""How many batches the loop may hold taken but not yet yielded (its look-ahead, beyond
any device prefetch, which is counted exactly) without a resume reading any of them again:
a ``sync`` with ``every_n_steps`` up to this, or none."""
ANCHORS = 8
"""How many older states, one every ``LOOK_AHEAD`` positions, are kept besides: with a
longer look-ahead (a ``sync`` agreeing less often), a resume reads again fewer than
``LOOK_AHEAD`` batches, up to a look-ahead of ``LOOK_AHEAD * (ANCHORS + 1)``."""

Saved = tuple[int, Any]
"""A position in the epoch (batches handed out) and the loader's state there."""


class StatefulPositions:
    """The states of a ``StatefulDataLoader`` after each batch the loop may not have
    yielded yet, within one epoch."""

    __slots__ = ("_anchors", "_epoch", "_loaded", "_states", "_taken", "loader")

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._states: deque[Saved] = deque()
        self._anchors: deque[Saved] = deque(maxlen=ANCHORS)
        self._epoch = 0
        self._taken = 0
        self._loaded: tuple[int, list[Saved]] | None = None

    def iterate(self, epoch: int, start: int, *, strict: bool = True) -> Iterator[Any]:
        """The batches of ``epoch`` from batch ``start`` on.

        After ``load_state_dict``: inside the saved epoch, the loader's state saved at
        the latest position at or before ``start`` is loaded, and only the batches
        between it and ``start`` are read and dropped. At the start of the epoch after
        the saved one (a state saved on an epoch's last step), the saved epoch's last
        state is loaded and that epoch's iteration finished (which reads nothing when the
        state is at its end), so that the loader and its dataset go on into this epoch
        as they would have without the interruption (a dataset that counts its passes,
        say). torch's global generator is left as it was.

        Raises:
            ValueError: The epoch ends before batch ``start``, when ``strict`` (the
                loader has a length); otherwise the epoch's batches are simply none.
        """
        loaded, self._loaded = self._loaded, None
        self._epoch = epoch
        self._states.clear()
        self._anchors.clear()
        self._taken = start
        position = 0
        user_state = torch.get_rng_state()
        restored = False
        try:
            if loaded is not None and loaded[1]:
                saved_epoch, saved = loaded
                if start and saved_epoch == epoch:
                    usable = [item for item in saved if item[0] <= start]
                    if usable:
                        position, state = max(usable, key=lambda item: item[0])
                        self.loader.load_state_dict(state)
                        restored = True
                elif not start and saved_epoch == epoch - 1 and _keeps_state(self.loader):
                    _, state = max(saved, key=lambda item: item[0])
                    self.loader.load_state_dict(state)
                    for _ in iter(self.loader):  # the rest of the saved epoch: none at its end
                        pass
                    restored = True
            if restored or start:
                # Draws made now (a base seed, the skipped batches) were made before the
                # state the user restored: put torch's global generator back before the
                # epoch's own iterator is made, as the uninterrupted run made it.
                torch.set_rng_state(user_state)
            batches = iter(self.loader)
            dropped = sum(1 for _ in islice(batches, start - position))
        finally:
            if start:
                torch.set_rng_state(user_state)  # the resume's draws are not the user's
        if strict and dropped < start - position:
            raise ValueError(
                f"cannot resume at batch {start} of the epoch: the data yielded only "
                f"{position + dropped} batches in it"
            )
        return self._recording(batches, start)

    def taken(self, batches: Iterator[Any]) -> Generator[Any, None, None]:
        """``batches`` (what the loop iterates, after any device prefetch), counting how
        many of the epoch the loop has taken, so that states it can no longer need are
        let go."""
        for batch in batches:
            self._taken += 1
            self._forget()
            yield batch

    def _recording(self, batches: Iterator[Any], position: int) -> Generator[Any, None, None]:
        for batch in batches:
            position += 1
            # A copy: a dataset's state_dict() may hand out its live state.
            self._states.append((position, copy.deepcopy(self.loader.state_dict())))
            self._forget()
            yield batch

    def _forget(self) -> None:
        """Let go of the states before the oldest position the loop may still be at,
        keeping one every ``LOOK_AHEAD`` positions among the newest of them."""
        states = self._states
        oldest = self._taken - LOOK_AHEAD
        while states and states[0][0] < oldest:
            saved = states.popleft()
            if saved[0] % LOOK_AHEAD == 0:
                self._anchors.append(saved)

    def state_dict(self) -> dict[str, Any]:
        """The epoch and the loader's states at the positions kept, as JSON values."""
        return {
            "epoch": self._epoch,
            "positions": [
                [position, to_json(state)] for position, state in (*self._anchors, *self._states)
            ],
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


def _keeps_state(loader: Any) -> bool:
    """Whether ``loader``'s dataset has a state of its own (``state_dict`` and
    ``load_state_dict``, torchdata's ``Stateful``): only then does loading the loader's
    state carry anything into the next epoch. Without, torchdata would read the saved
    epoch again to get there, for nothing."""
    dataset = getattr(loader, "dataset", None)
    return callable(getattr(dataset, "state_dict", None)) and callable(
        getattr(dataset, "load_state_dict", None)
    )
