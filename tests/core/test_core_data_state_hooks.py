"""The data's own part of a state dict (``dloop_state_dict`` / ``dloop_load_state_dict``),
``bool(loop)`` and ``with Loop(...)``."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from dloop import Loop


class ShuffledData:
    """Sized data whose order comes from a seed it draws at the start of every epoch, as
    a ``shuffle=True`` DataLoader does; its hooks carry the seed of the current epoch."""

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.next_seed = seed
        self.epoch_seed = -1
        self.loaded: list[object] = []

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self.epoch_seed, self.next_seed = self.next_seed, self.next_seed * 7 + 1
        seed = self.epoch_seed
        return iter([(seed, (index * seed) % self.length) for index in range(self.length)])

    def dloop_state_dict(self) -> dict[str, int]:
        return {"epoch_seed": self.epoch_seed, "next_seed": self.next_seed}

    def dloop_load_state_dict(self, state: dict[str, int]) -> None:
        self.loaded.append(state)
        # The resumed epoch (if any) redraws the saved epoch seed.
        self.next_seed = state["epoch_seed"] if state["epoch_seed"] >= 0 else state["next_seed"]


def test_the_data_hooks_carry_the_data_state_through_a_json_round_trip() -> None:
    full = [batch for batch, _ in Loop(ShuffledData(5, seed=3), max_epochs=3)]
    first = Loop(ShuffledData(5, seed=3), max_epochs=3)
    done = []
    for batch, _ in first:
        done.append(batch)
        if len(done) == 7:
            break
    state = json.loads(json.dumps(first.state_dict()))
    assert state["data"] == {"epoch_seed": 22, "next_seed": 155}
    data = ShuffledData(5, seed=999)
    second = Loop(data, max_epochs=3)
    second.load_state_dict(state)
    assert data.loaded == [state["data"]]
    assert done + [batch for batch, _ in second] == full


def test_data_without_hooks_saves_none() -> None:
    loop = Loop([1, 2, 3], max_epochs=1)
    assert loop.state_dict()["data"] is None


def test_a_data_state_for_data_without_the_load_hook_is_refused() -> None:
    saved = Loop(ShuffledData(4, seed=1), max_epochs=2).state_dict()
    loop = Loop([1, 2, 3, 4], max_epochs=2)
    with pytest.raises(ValueError, match=r"'data'.*dloop_load_state_dict"):
        loop.load_state_dict(saved)
    assert loop.state.step == -1


def test_a_data_state_is_refused_for_a_stream_without_hooks() -> None:
    saved = Loop(ShuffledData(4, seed=1), max_epochs=2).state_dict()
    saved["data"] = {"opaque": [1, 2]}
    loop: Loop[Any] = Loop(iter(range(10)), max_steps=3)
    with pytest.raises(ValueError, match="dloop_load_state_dict"):
        loop.load_state_dict(saved)


def test_bool_of_a_loop_is_true_even_when_its_length_is_unknown() -> None:
    loop = Loop(iter(range(3)), max_steps=10**6, max_seconds=5.0)
    stream_loop = Loop(iter(range(3)), max_seconds=5.0)
    with pytest.raises(TypeError):
        len(stream_loop)
    assert bool(loop)
    assert bool(stream_loop)
    finished = Loop([1], max_epochs=1)
    list(finished)
    assert bool(finished)


def test_with_loop_closes_the_loop_and_restores_stop_signal_handlers() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with Loop(range(10), max_epochs=1, stop_signals=(signal.SIGUSR1,)) as loop:
        seen = []
        for batch, _ in loop:
            seen.append(batch)
            assert signal.getsignal(signal.SIGUSR1) is not before
            if batch == 2:
                break
    assert signal.getsignal(signal.SIGUSR1) is before
    assert seen == [0, 1, 2]
    assert list(loop) == []


def test_with_loop_closes_the_loop_when_the_body_raises() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    loop = Loop(range(10), max_epochs=1, stop_signals=(signal.SIGUSR1,))

    def body() -> None:
        with loop:
            for _ in loop:
                raise KeyError("boom")

    with pytest.raises(KeyError):
        body()
    assert signal.getsignal(signal.SIGUSR1) is before
    assert list(loop) == []
