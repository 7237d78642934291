"""``prepare`` calls ``set_epoch`` on the sampler, batch sampler and dataset every epoch."""

from __future__ import annotations

import pytest
import torch
from _torch_data import EpochBatchSampler, EpochDataset, EpochLog, EpochSampler
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from dloop import Loop, LoopEvents
from dloop_torch import prepare

EPOCHS = 3


def epochs_of(loop: Loop[list[torch.Tensor]]) -> list[list[list[int]]]:
    """The sample ids of every batch the loop yields, grouped by epoch."""
    epochs: list[list[list[int]]] = []
    for (ids,), events in loop:
        if LoopEvents.EPOCH_START in events:
            epochs.append([])
        epochs[-1].append(ids.tolist())
    return epochs


@pytest.mark.parametrize("rank", [0, 1])
def test_a_distributed_sampler_gives_the_order_of_manual_set_epoch_calls(rank: int) -> None:
    dataset = TensorDataset(torch.arange(40))
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=2, rank=rank, shuffle=True, seed=7
    )
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)

    through_the_loop = epochs_of(Loop(prepare(loader), max_epochs=EPOCHS))

    by_hand = []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        by_hand.append([ids.tolist() for (ids,) in loader])
    assert through_the_loop == by_hand
    assert by_hand[0] != by_hand[1] != by_hand[2] != by_hand[0]


def test_without_prepare_a_distributed_sampler_repeats_its_first_order() -> None:
    """Why ``prepare`` matters: a DataLoader has no ``set_epoch`` of its own."""
    dataset = TensorDataset(torch.arange(40))
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=2, rank=0, shuffle=True, seed=7
    )
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)

    epochs = epochs_of(Loop(loader, max_epochs=EPOCHS))

    assert epochs[0] == epochs[1] == epochs[2]


def test_set_epoch_reaches_the_batch_sampler_its_sampler_and_the_dataset() -> None:
    log = EpochLog()
    batch_sampler = EpochBatchSampler(EpochSampler(6, log), batch_size=3, log=log)
    loader = DataLoader(EpochDataset(6, log), batch_sampler=batch_sampler)

    for _ in Loop(prepare(loader), max_epochs=2):
        pass

    set_epoch_calls = [call for call in log.calls if call[0] != "load"]
    assert set_epoch_calls == [
        ("batch_sampler", 0),
        ("sampler", 0),
        ("dataset", 0),
        ("batch_sampler", 1),
        ("sampler", 1),
        ("dataset", 1),
    ]


def test_a_sampler_shared_by_the_loader_and_its_batch_sampler_gets_one_call() -> None:
    log = EpochLog()
    sampler = EpochSampler(6, log)
    loader = DataLoader(EpochDataset(6, log), batch_size=3, sampler=sampler)
    assert loader.sampler is sampler
    assert getattr(loader.batch_sampler, "sampler", None) is sampler

    for _ in Loop(prepare(loader), max_epochs=2):
        pass

    set_epoch_calls = [call for call in log.calls if call[0] != "load"]
    assert set_epoch_calls == [("sampler", 0), ("dataset", 0), ("sampler", 1), ("dataset", 1)]


def test_set_epoch_comes_before_the_epoch_is_read() -> None:
    log = EpochLog()
    loader = DataLoader(EpochDataset(4, log), batch_size=2, sampler=EpochSampler(4, log))

    for _ in Loop(prepare(loader), max_epochs=2):
        pass

    assert log.calls == [
        ("sampler", 0),
        ("dataset", 0),
        ("load", 0),
        ("load", 1),
        ("load", 2),
        ("load", 3),
        ("sampler", 1),
        ("dataset", 1),
        ("load", 0),
        ("load", 1),
        ("load", 2),
        ("load", 3),
    ]


def test_a_resumed_run_calls_set_epoch_with_the_epoch_it_resumes_in() -> None:
    log = EpochLog()
    loader = DataLoader(EpochDataset(6, log), batch_size=2, sampler=EpochSampler(6, log))
    first = Loop(prepare(loader), max_epochs=3)
    for _, _ in first:
        if first.state.step == 7:  # epoch 2, batch 1 of 3
            with pytest.warns(UserWarning, match="cannot reproduce the order of EpochSampler"):
                saved = first.state_dict()
            break
    log.calls.clear()

    resumed = Loop(prepare(loader), max_epochs=3)
    resumed.load_state_dict(saved)
    batches = [ids.flatten().tolist() for ids, _ in resumed]

    assert batches == [[4, 5]]
    assert log.calls == [("sampler", 2), ("dataset", 2), ("load", 4), ("load", 5)]


@pytest.mark.parametrize(
    ("epoch", "error"), [(-1, ValueError), (1.0, TypeError), (True, TypeError)]
)
def test_set_epoch_rejects_what_is_not_an_epoch_number(epoch: object, error: type) -> None:
    prepared = prepare(DataLoader(TensorDataset(torch.arange(4))))

    with pytest.raises(error, match="epoch must be an int >= 0"):
        prepared.set_epoch(epoch)  # type: ignore[arg-type]
