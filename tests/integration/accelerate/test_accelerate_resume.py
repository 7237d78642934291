"""Interrupt and resume through ``accelerator.save_state`` / ``load_state`` with the loop
registered for checkpointing (one process): the resumed run's batches and events are the
uninterrupted run's, at every cut; without the loop registered, or without
``dloop_torch.prepare``, they are not."""

from __future__ import annotations

from pathlib import Path

import pytest
from _accelerate_worker import BATCH_SIZE, EPOCHS, SAMPLES, Row, resumed, run

from dloop import LoopWarning

PER_EPOCH = SAMPLES // BATCH_SIZE
CUTS = {
    "mid-epoch-0": 5,
    "end-of-epoch-0": PER_EPOCH - 1,
    "mid-epoch-1": PER_EPOCH + 6,
    "end-of-epoch-1": 2 * PER_EPOCH - 1,
    "last-step": EPOCHS * PER_EPOCH - 1,
}
UNINTERRUPTED: dict[bool, list[Row]] = {}


def uninterrupted(*, seedable: bool) -> list[Row]:
    """The trace of the uninterrupted run, made once per sampler."""
    if seedable not in UNINTERRUPTED:
        UNINTERRUPTED[seedable] = run(seedable=seedable)
    return UNINTERRUPTED[seedable]


@pytest.mark.parametrize("seedable", [False, True], ids=["default", "seedable"])
@pytest.mark.parametrize("cut", CUTS.values(), ids=CUTS.keys())
def test_a_run_resumed_from_save_state_continues_the_uninterrupted_run(
    tmp_path: Path, seedable: bool, cut: int
) -> None:
    whole = uninterrupted(seedable=seedable)

    pieced = resumed(seedable=seedable, cut=cut, directory=tmp_path / "state")

    assert len(whole) == EPOCHS * PER_EPOCH
    assert [row[0] for row in pieced] == list(range(EPOCHS * PER_EPOCH))
    assert pieced == whole


@pytest.mark.parametrize("seedable", [False, True], ids=["default", "seedable"])
def test_without_the_loop_registered_the_resumed_run_starts_over(
    tmp_path: Path, seedable: bool
) -> None:
    cut = CUTS["mid-epoch-1"]
    whole = uninterrupted(seedable=seedable)

    pieced = resumed(seedable=seedable, cut=cut, directory=tmp_path / "state", register=False)

    assert pieced != whole
    assert pieced[: cut + 1] == whole[: cut + 1]
    assert pieced[cut + 1][0] == 0  # the loop forgot its position: step 0 again


def test_without_prepare_a_shuffled_epoch_resumes_in_another_order(tmp_path: Path) -> None:
    cut = CUTS["mid-epoch-1"]
    whole = uninterrupted(seedable=False)

    with pytest.warns(LoopWarning, match="draws a new random order for every pass"):
        pieced = resumed(seedable=False, cut=cut, directory=tmp_path / "state", prepared=False)

    # The position is right (the loop state), the batches are not: the loader's generator
    # was not carried, so the resumed epoch 1 is drawn afresh; dloop warns about it.
    assert [row[0] for row in pieced] == [row[0] for row in whole]
    assert [row[2] for row in pieced] != [row[2] for row in whole]
