"""The data part of a state dict is each process's own: ``prepare`` records the process
that saved it (rank and world size, under torch.distributed) and warns when another
process loads it, at the user's ``load_state_dict`` line; never an error.

torch.distributed is mocked here (its rank, world size and initialization); the gloo
tests in test_torch_uneven.py check the same with two real processes.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import torch
import torch.distributed as dist
from _torch_data import RecordingDataset
from torch.utils.data import DataLoader, DistributedSampler

from dloop import Loop, LoopWarning
from dloop_torch import prepare


def as_process(monkeypatch: pytest.MonkeyPatch, rank: int | None, world_size: int = 2) -> None:
    """Make torch.distributed look initialized as ``rank`` of ``world_size`` (None: not
    initialized)."""
    monkeypatch.setattr(dist, "is_initialized", lambda: rank is not None)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: world_size)


def make_loop(rank: int) -> Loop[Any]:
    """A shuffled loader whose order is this rank's own (its generator seeded by rank)."""
    generator = torch.Generator().manual_seed(rank)
    loader = DataLoader(RecordingDataset(12), batch_size=2, shuffle=True, generator=generator)
    return Loop(prepare(loader), max_epochs=2)


def saved_at(rank: int | None, monkeypatch: pytest.MonkeyPatch, *, world_size: int = 2) -> Any:
    """A state dict saved after step 2 on process ``rank``, through JSON."""
    as_process(monkeypatch, rank, world_size)
    loop = make_loop(rank or 0)
    for _ in loop:
        if loop.state.step == 2:
            break
    return json.loads(json.dumps(loop.state_dict()))


def test_the_data_part_names_the_process_that_saved_it(monkeypatch: pytest.MonkeyPatch) -> None:
    state = saved_at(1, monkeypatch, world_size=4)

    assert state["data"]["process"] == {"rank": 1, "world_size": 4}


def test_without_torch_distributed_nothing_new_is_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = saved_at(None, monkeypatch)

    assert set(state["data"]) == {"order"}
    # Nothing to save about the data: still None, with or without a process group.
    as_process(monkeypatch, 1)
    plain = Loop(prepare([torch.zeros(1)]), max_epochs=1)
    assert plain.state_dict()["data"] is None


@pytest.mark.parametrize(
    ("saved", "loading", "named"),
    [
        pytest.param(
            (0, 2), (1, 2), "rank 1 of 2) loads a state dict saved by rank 0 of 2", id="rank"
        ),
        pytest.param(
            (1, 2), (1, 4), "rank 1 of 4) loads a state dict saved by rank 1 of 2", id="world"
        ),
    ],
)
def test_loading_another_process_s_state_dict_warns_at_the_user_s_line(
    saved: tuple[int, int], loading: tuple[int, int], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = saved_at(saved[0], monkeypatch, world_size=saved[1])
    as_process(monkeypatch, *loading)
    loop = make_loop(loading[0])

    with pytest.warns(LoopWarning, match="loads a state dict saved by rank") as caught:
        loop.load_state_dict(state)

    (warning,) = caught
    message = str(warning.message)
    assert named in message
    assert "Save a state dict on every process and load each process's own" in message
    assert warning.filename == __file__
    # A warning, not an error: the resume goes on, in the saving process's order.
    assert len(list(loop)) == 12 - 3


def test_loading_this_process_s_own_state_dict_resumes_its_order_without_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_process(monkeypatch, 1)
    uninterrupted = [batch.tolist() for batch, _ in make_loop(1)]
    state = saved_at(1, monkeypatch)
    loop = make_loop(1)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop.load_state_dict(state)
        rest = [batch.tolist() for batch, _ in loop]

    assert rest == uninterrupted[3:]


@pytest.mark.parametrize("saved_rank", [None, 0])
def test_no_warning_when_either_side_knows_no_process(
    saved_rank: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state dict saved without torch.distributed (or by an older dloop_torch) names no
    process; one loaded without torch.distributed has none to compare with."""
    state = saved_at(saved_rank, monkeypatch)
    as_process(monkeypatch, None if saved_rank is not None else 1)
    loop = make_loop(0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop.load_state_dict(state)


def test_a_malformed_process_record_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    state = saved_at(0, monkeypatch)
    state["data"]["process"] = {"rank": "0", "world_size": 2}

    with pytest.raises(ValueError, match=r"data\['process'\] must be \{'rank': int"):
        make_loop(0).load_state_dict(state)


def test_a_distributed_sampler_s_order_is_every_process_s_so_it_loads_anywhere_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DistributedSampler's order comes from its seed and the epoch (what Fabric and
    Accelerate put under a shuffled loader, and save once, from rank 0): no process is
    recorded, and rank 1 loads rank 0's state dict without a warning."""

    def make(rank: int) -> Loop[Any]:
        sampler: DistributedSampler[Any] = DistributedSampler(
            RecordingDataset(12), num_replicas=2, rank=rank, shuffle=True, seed=3
        )
        return Loop(
            prepare(DataLoader(RecordingDataset(12), batch_size=2, sampler=sampler)), max_epochs=2
        )

    as_process(monkeypatch, 0)
    first = make(0)
    for _ in first:
        if first.state.step == 1:
            break
    state = json.loads(json.dumps(first.state_dict()))
    assert "process" not in (state["data"] or {})
    as_process(monkeypatch, 1)
    second = make(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoopWarning)
        second.load_state_dict(state)
