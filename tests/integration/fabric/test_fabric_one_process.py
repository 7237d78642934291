"""dloop under Lightning Fabric in one process: ``set_epoch`` reaches the sampler through
``fabric.setup_dataloaders``'s wrapper (resumed runs too), ``len(loop)`` is right, and a
run checkpointed with ``fabric.save`` and resumed with ``fabric.load`` takes the steps,
and ends with the weights, of the uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _fabric_runs import BATCH_SIZE, EPOCHS, SAMPLES, dataset, train
from lightning_fabric import Fabric
from torch.utils.data import DistributedSampler

from dloop import Loop
from dloop_torch import prepare

SAMPLERS = ["random", "distributed"]
STEPS_PER_EPOCH = SAMPLES // BATCH_SIZE


@pytest.fixture(scope="module")
def fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=1)


def epochs_of(steps: list[Any]) -> list[list[int]]:
    """The sample ids of each epoch, in the order the loop yielded them."""
    ids = [i for batch, _ in steps for i in batch]
    per_epoch = SAMPLES
    return [ids[start : start + per_epoch] for start in range(0, len(ids), per_epoch)]


def test_set_epoch_reaches_the_sampler_through_fabrics_wrapper(fabric: Fabric) -> None:
    steps, _, _ = train(fabric, "distributed")

    reference: DistributedSampler[int] = DistributedSampler(
        dataset(), num_replicas=1, rank=0, shuffle=True, seed=7
    )
    expected = []
    for epoch in range(EPOCHS):
        reference.set_epoch(epoch)
        expected.append(list(reference))
    assert epochs_of(steps) == expected
    assert len({tuple(order) for order in expected}) == EPOCHS  # each epoch its own order


def test_a_run_resumed_at_an_epoch_end_shuffles_as_that_epoch_and_not_as_epoch_0(
    fabric: Fabric, tmp_path: Path
) -> None:
    """Fabric's wrapper sets its sampler's epoch to how often it was iterated, which
    starts from 0 again in the resumed process; prepare() makes it the loop's epoch."""
    checkpoint = tmp_path / "run.ckpt"
    full, _, _ = train(fabric, "distributed")
    train(fabric, "distributed", stop_after=STEPS_PER_EPOCH - 1, checkpoint=checkpoint)

    resumed, _, _ = train(fabric, "distributed", checkpoint=checkpoint, resume=True)

    assert epochs_of(resumed) == epochs_of(full)[1:]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_len_of_the_loop_over_fabrics_loader(fabric: Fabric, sampler: str) -> None:
    data = fabric.setup_dataloaders(
        torch.utils.data.DataLoader(dataset(), batch_size=BATCH_SIZE, shuffle=True)
    )
    loop = Loop(prepare(data), max_epochs=EPOCHS)

    assert len(loop) == EPOCHS * STEPS_PER_EPOCH == sum(1 for _ in loop)
    steps, _, length = train(fabric, sampler)
    assert length == len(steps) == EPOCHS * STEPS_PER_EPOCH


# After an update mid-epoch, at an epoch end, mid-accumulation, in the last epoch.
CUTS = [5, STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH + 2, 2 * STEPS_PER_EPOCH + 7]


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("cut", CUTS)
def test_resume_through_fabric_save_and_load_is_exact(
    fabric: Fabric, tmp_path: Path, sampler: str, cut: int
) -> None:
    checkpoint = tmp_path / "run.ckpt"
    full, full_weights, _ = train(fabric, sampler)
    first, _, _ = train(fabric, sampler, stop_after=cut, checkpoint=checkpoint)

    resumed, weights, length = train(fabric, sampler, checkpoint=checkpoint, resume=True)

    assert first + resumed == full
    assert length == len(full) - cut - 1
    if "Update" in first[-1][1]:  # no half-accumulated gradients were lost
        assert weights == pytest.approx(full_weights, abs=1e-6)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_without_the_loop_in_fabrics_checkpoint_the_resume_is_wrong(
    fabric: Fabric, tmp_path: Path, sampler: str
) -> None:
    """What the resume tests above hold depends on the loop's state being in the
    checkpoint: left out, the resumed run starts over, with epoch 0's order."""
    checkpoint = tmp_path / "run.ckpt"
    full, _, _ = train(fabric, sampler)
    cut = STEPS_PER_EPOCH + 2
    train(fabric, sampler, stop_after=cut, checkpoint=checkpoint, with_loop=False)

    resumed, _, _ = train(fabric, sampler, checkpoint=checkpoint, resume=True, with_loop=False)

    assert resumed != full[cut + 1 :]
    assert resumed == full  # it simply started again
