"""``dloop_torch.prepare`` over Accelerate's prepared DataLoader: ``set_epoch`` reaches the
sampler inside Accelerate's wrappers, and ``len(loop)`` is right (one process)."""

from __future__ import annotations

from typing import Any

import pytest
from _accelerate_worker import (
    BATCH_SIZE,
    EPOCHS,
    SAMPLES,
    loop_length,
    make_accelerator,
    make_loader,
    reference_epochs,
)
from accelerate.data_loader import (  # type: ignore[import-untyped]  # no py.typed
    DataLoaderShard,
    SeedableRandomSampler,
)
from torch.utils.data import BatchSampler, RandomSampler

from dloop import Loop, LoopEvents
from dloop_torch import prepare

Epochs = list[list[list[int]]]


def epochs_of(loop: Loop[Any]) -> Epochs:
    """The sample ids of every batch the loop yields, grouped by epoch."""
    epochs: Epochs = []
    for (ids, _, _), events in loop:
        if LoopEvents.EPOCH_START in events:
            epochs.append([])
        epochs[-1].append(ids.tolist())
    return epochs


def test_accelerates_default_sampler_keeps_torchs_order_every_epoch() -> None:
    accelerator = make_accelerator(seedable=False)
    loader = accelerator.prepare(make_loader())
    assert type(loader) is DataLoaderShard
    assert type(loader.batch_sampler) is BatchSampler
    assert type(loader.batch_sampler.sampler) is RandomSampler

    epochs = epochs_of(Loop(prepare(loader), max_epochs=EPOCHS))

    assert epochs == reference_epochs(seedable=False)
    assert len({str(epoch) for epoch in epochs}) == EPOCHS


def test_set_epoch_reaches_the_seedable_random_sampler_inside_the_wrappers() -> None:
    accelerator = make_accelerator(seedable=True)
    loader = accelerator.prepare(make_loader())
    sampler = loader.batch_sampler.sampler
    assert type(sampler) is SeedableRandomSampler

    epochs = epochs_of(Loop(prepare(loader), max_epochs=EPOCHS))

    assert epochs == reference_epochs(seedable=True)
    assert len({str(epoch) for epoch in epochs}) == EPOCHS


def test_an_epoch_set_by_prepare_gives_that_epochs_order_first() -> None:
    accelerator = make_accelerator(seedable=True)
    prepared = prepare(accelerator.prepare(make_loader()))

    prepared.set_epoch(2)

    assert [ids.tolist() for ids, _, _ in prepared] == reference_epochs(seedable=True)[2]


@pytest.mark.parametrize("seedable", [False, True], ids=["default", "seedable"])
def test_the_loop_has_the_length_of_accelerates_loader(seedable: bool) -> None:
    accelerator = make_accelerator(seedable=seedable)
    loader = accelerator.prepare(make_loader())

    assert len(prepare(loader)) == len(loader) == SAMPLES // BATCH_SIZE
    assert loop_length(seedable=seedable) == EPOCHS * SAMPLES // BATCH_SIZE
