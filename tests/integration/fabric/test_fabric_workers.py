"""Fabric's DataLoader wrapper (``fabric.setup_dataloaders``) over a loader with worker
processes (``num_workers=2``, persistent or not), through ``dloop_torch.prepare``: a run cut
at any step and resumed sees the batches of the uninterrupted run, and persistent workers
restarted for a dataset's ``set_epoch`` serve every epoch (one process).

``_FabricDataLoader`` copies the DataLoader's attributes into its own and keeps the
DataLoader in ``_dataloader``, which holds the workers, the iterator and the generator
that its iteration uses: dloop must handle those there.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader, Dataset

from dloop import Event, Loop
from dloop_torch import prepare

SAMPLES = 24
BATCH_SIZE = 4
PER_EPOCH = SAMPLES // BATCH_SIZE
EPOCHS = 3
CUTS = (2, PER_EPOCH - 1, PER_EPOCH + 2, 2 * PER_EPOCH + 3)
"""Mid-epoch 0, the end of epoch 0, mid-epoch 1, mid-epoch 2."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*restarts the workers at every epoch"),
]

Row = tuple[int, list[list[int]], list[str]]
"""[step, the batch's (sample id, epoch the dataset was set to) pairs, event names]."""
Checkpoint = tuple[str, torch.Tensor]
"""The loop's state dict as JSON, and torch's global generator state saved beside it."""


class EpochTagged(Dataset[torch.Tensor]):
    """Sample i is ``tensor([i, e])``, e being the epoch ``set_epoch`` gave (-1 without
    ``set_epoch``)."""

    def __init__(self, *, follows_epochs: bool) -> None:
        self.epoch = 0 if follows_epochs else -1
        if follows_epochs:
            self.set_epoch = self._set_epoch

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, self.epoch])

    def _set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def make_loader(
    *, seeded: bool, persistent: bool, epochs_in_dataset: bool = False
) -> Callable[[], DataLoader[torch.Tensor]]:
    def make() -> DataLoader[torch.Tensor]:
        return DataLoader(
            EpochTagged(follows_epochs=epochs_in_dataset),
            batch_size=BATCH_SIZE,
            shuffle=True,
            num_workers=2,
            persistent_workers=persistent,
            generator=torch.Generator().manual_seed(11) if seeded else None,
        )

    return make


def trace(
    make: Callable[[], DataLoader[torch.Tensor]],
    *,
    cut: int | None = None,
    checkpoint: Checkpoint | None = None,
) -> tuple[list[Row], Checkpoint | None]:
    """The rows of a run over Fabric's wrapped loader: from ``checkpoint`` when given (the
    global generator restored too, as a user restores it from ``fabric.load``), up to and
    including step ``cut`` when given (then its checkpoint)."""
    loader = Fabric(accelerator="cpu", devices=1).setup_dataloaders(make())
    torch.manual_seed(123)
    loop = Loop(prepare(loader), max_epochs=EPOCHS, events={"Update": Event(every_n_steps=4)})
    if checkpoint is not None:
        loop.load_state_dict(json.loads(checkpoint[0]))
        torch.set_rng_state(checkpoint[1])
    rows: list[Row] = []
    for batch, events in loop:
        rows.append((loop.state.step, batch.tolist(), sorted(str(key) for key in events)))
        if loop.state.step == cut:
            return rows, (json.dumps(loop.state_dict()), torch.get_rng_state())
    return rows, None


VARIANTS = {
    "persistent-seeded": make_loader(seeded=True, persistent=True),
    "persistent-global-rng": make_loader(seeded=False, persistent=True),
    "restarted-seeded": make_loader(seeded=True, persistent=False),
    "persistent-dataset-set-epoch": make_loader(
        seeded=True, persistent=True, epochs_in_dataset=True
    ),
}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_run_with_workers_resumed_at_any_step_continues_the_uninterrupted_run(
    variant: Callable[[], DataLoader[torch.Tensor]],
) -> None:
    whole, _ = trace(variant)
    assert [row[0] for row in whole] == list(range(EPOCHS * PER_EPOCH))

    for cut in CUTS:
        first, checkpoint = trace(variant, cut=cut)
        rest, _ = trace(variant, checkpoint=checkpoint)

        assert first + rest == whole, f"resumed after step {cut}"


def test_persistent_workers_restarted_for_the_datasets_set_epoch_serve_every_epoch() -> None:
    rows, _ = trace(make_loader(seeded=True, persistent=True, epochs_in_dataset=True))

    epochs = [[epoch for _, epoch in batch] for _, batch, _ in rows]
    assert epochs == [[epoch] * BATCH_SIZE for epoch in range(EPOCHS) for _ in range(PER_EPOCH)]
    ids = [[i for i, _ in batch] for _, batch, _ in rows]
    orders = [
        sorted(i for batch in ids[e * PER_EPOCH : (e + 1) * PER_EPOCH] for i in batch)
        for e in range(EPOCHS)
    ]
    assert orders == [list(range(SAMPLES))] * EPOCHS
