"""torchdata's ``StatefulDataLoader`` through ``prepare``: its own state travels in the
loop's state dict, so a resume over an IterableDataset does not read again what was done."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from _torch_data import RecordingDataset
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader  # type: ignore[import-untyped]

from dloop import Loop
from dloop_torch import prepare

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


class PositionedStream(IterableDataset[torch.Tensor]):
    """Samples ``tensor([i])`` for i < size, shared out among workers (i % workers); its
    ``state_dict`` is where it stands, so that it can continue from there. ``read`` lists
    what it produced in this process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self.read: list[int] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        worker = get_worker_info()
        workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        while self.position < self.size:
            index = self.position
            self.position += 1
            if index % workers == worker_id:
                self.read.append(index)
                yield torch.tensor([index])
        self.position = 0  # the next pass starts over

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["position"]


def ids(batch: Any) -> list[int]:
    return [int(i) for i in batch.flatten()]


def run(
    loader: StatefulDataLoader[Any],
    *,
    max_epochs: int,
    stop_at: int | None = None,
    state: dict[str, Any] | None = None,
) -> tuple[list[list[int]], dict[str, Any]]:
    loop = Loop(prepare(loader), max_epochs=max_epochs)
    if state is not None:
        loop.load_state_dict(state)
    seen = []
    for batch, _ in loop:
        seen.append(ids(batch))
        if loop.state.step == stop_at:
            break
    return seen, json.loads(json.dumps(loop.state_dict()))


def test_a_resume_at_sample_900_of_1000_reads_only_the_last_100() -> None:
    uninterrupted, _ = run(StatefulDataLoader(PositionedStream(1000), batch_size=10), max_epochs=1)
    _, state = run(
        StatefulDataLoader(PositionedStream(1000), batch_size=10), max_epochs=1, stop_at=89
    )
    dataset = PositionedStream(1000)

    resumed, _ = run(StatefulDataLoader(dataset, batch_size=10), max_epochs=1, state=state)

    assert resumed == uninterrupted[90:]
    assert dataset.read == list(range(900, 1000))


@pytest.mark.parametrize("cut", [0, 4, 6, 11, 12, 20])
def test_a_resume_at_any_step_of_any_epoch_continues_the_uninterrupted_run(cut: int) -> None:
    def loader() -> StatefulDataLoader[Any]:
        return StatefulDataLoader(PositionedStream(21), batch_size=3)  # 7 batches an epoch

    uninterrupted, _ = run(loader(), max_epochs=3)
    _, state = run(loader(), max_epochs=3, stop_at=cut)

    resumed, _ = run(loader(), max_epochs=3, state=state)

    assert resumed == uninterrupted[cut + 1 :]


def test_the_state_dict_carries_the_loaders_state_at_the_last_positions() -> None:
    _, state = run(StatefulDataLoader(PositionedStream(30), batch_size=3), max_epochs=1, stop_at=5)

    positions = state["data"]["stateful"]["positions"]
    # The loop read one batch ahead (the data has no length): 7 batches handed out.
    assert [position for position, _ in positions] == [1, 2, 3, 4, 5, 6, 7]
    assert positions[-2][1]["dataset_state"] == {"position": 18}


@pytest.mark.slow
@pytest.mark.parametrize("cut", [3, 9])
def test_with_worker_processes_a_resume_continues_the_uninterrupted_run(cut: int) -> None:
    def loader() -> StatefulDataLoader[Any]:
        return StatefulDataLoader(PositionedStream(24), batch_size=2, num_workers=2)

    uninterrupted, _ = run(loader(), max_epochs=2)
    _, state = run(loader(), max_epochs=2, stop_at=cut)

    resumed, _ = run(loader(), max_epochs=2, state=state)

    assert resumed == uninterrupted[cut + 1 :]


@pytest.mark.parametrize("cut", [2, 7, 13])
def test_over_a_map_style_dataset_it_skips_by_index_in_the_shuffled_order(cut: int) -> None:
    def loader(dataset: RecordingDataset) -> StatefulDataLoader[Any]:
        return StatefulDataLoader(
            dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
        )

    uninterrupted, _ = run(loader(RecordingDataset(22)), max_epochs=3)
    _, state = run(loader(RecordingDataset(22)), max_epochs=3, stop_at=cut)
    dataset = RecordingDataset(22)

    resumed, _ = run(loader(dataset), max_epochs=3, state=state)

    assert resumed == uninterrupted[cut + 1 :]
    assert dataset.loaded == [i for batch in resumed for i in batch]
