"""torchdata's ``StatefulDataLoader`` through ``prepare``: its own state travels in the
loop's state dict, so a resume over an IterableDataset does not read again what was done,
however far the loop read ahead (a sync's look-ahead, a device prefetch), and a resume at
an epoch's end goes on into the next epoch from the loader's state."""

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
from dloop_torch import _device, _prepare, _stateful, prepare

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")

LOOK_AHEAD = _stateful.LOOK_AHEAD
"""How far the loop may read ahead, beyond any prefetch, with nothing read again."""


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


class ShufflingStream(IterableDataset[torch.Tensor]):
    """Samples ``tensor([i])`` for i < size, in an order drawn anew for every pass from
    the pass's number; its state is the pass and the position in it. ``read`` lists
    what it produced."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.passes = 0
        self.position = 0
        self.read: list[int] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.passes)
        order = torch.randperm(self.size, generator=generator).tolist()
        while self.position < self.size:
            index = order[self.position]
            self.position += 1
            self.read.append(index)
            yield torch.tensor([index])
        self.position = 0
        self.passes += 1

    def state_dict(self) -> dict[str, int]:
        return {"passes": self.passes, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.passes = state["passes"]
        self.position = state["position"]


class OneProcessSync:
    """A ``sync`` for one process: the loop looks ahead ``every_n_steps`` batches over
    data without a length, as it does with several processes."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps

    def combine(self, flags: Any) -> Any:
        return list(flags)


def ids(batch: Any) -> list[int]:
    return [int(i) for i in batch.flatten()]


def run(
    loader: StatefulDataLoader[Any],
    *,
    max_epochs: int,
    stop_at: int | None = None,
    state: dict[str, Any] | None = None,
    sync: OneProcessSync | None = None,
) -> tuple[list[list[int]], dict[str, Any]]:
    loop = Loop(prepare(loader), max_epochs=max_epochs, sync=sync)
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


@pytest.mark.parametrize("cut", [3, 7, 5, 9])
def test_a_resume_at_an_epoch_end_goes_on_from_the_loaders_state(cut: int) -> None:
    """Each pass of the dataset has its own order: the epoch after the one the state was
    saved at the end of is the uninterrupted run's next pass, not the first again."""

    def loader() -> StatefulDataLoader[Any]:
        return StatefulDataLoader(ShufflingStream(12), batch_size=3)  # 4 batches an epoch

    uninterrupted, _ = run(loader(), max_epochs=3)
    _, state = run(loader(), max_epochs=3, stop_at=cut)
    resumed_loader = loader()

    resumed, _ = run(resumed_loader, max_epochs=3, state=state)

    assert resumed == uninterrupted[cut + 1 :]
    assert len({str(sorted(uninterrupted[e * 4 : e * 4 + 4])) for e in range(3)}) == 3
    # What was read: the uninterrupted rest, nothing of the epochs done.
    assert resumed_loader.dataset.read == [i for batch in resumed for i in batch]


@pytest.mark.parametrize(
    ("every_n_steps", "prefetch"),
    [
        pytest.param(20, None, id="sync-every-20"),
        pytest.param(None, 12, id="prefetch-12"),
        pytest.param(LOOK_AHEAD, 12, id="sync-every-64-and-prefetch-12"),
    ],
)
def test_however_far_the_loop_reads_ahead_a_resume_reads_only_what_was_not_done(
    monkeypatch: pytest.MonkeyPatch, every_n_steps: int | None, prefetch: int | None
) -> None:
    """The loop takes up to ``every_n_steps`` batches ahead to agree on the next
    stretch, and a CUDA prefetch ``prefetch`` more (its copies mocked on the CPU)."""
    if prefetch is not None:

        def prefetched(self: Any, batches: Iterator[Any]) -> Iterator[Any]:
            return _device.copied_ahead(
                batches, prefetch=prefetch, start=lambda batch: batch, finish=lambda b: b
            )

        monkeypatch.setattr(_prepare.PreparedData, "_to_device", prefetched)

    def sync() -> OneProcessSync | None:
        return None if every_n_steps is None else OneProcessSync(every_n_steps)

    def loader(dataset: PositionedStream) -> StatefulDataLoader[Any]:
        return StatefulDataLoader(dataset, batch_size=10)

    uninterrupted, _ = run(loader(PositionedStream(1000)), max_epochs=1, sync=sync())
    first = PositionedStream(1000)
    _, state = run(loader(first), max_epochs=1, stop_at=89, sync=sync())
    assert len(first.read) > 900  # the loop and the prefetch did read ahead
    dataset = PositionedStream(1000)

    resumed, _ = run(loader(dataset), max_epochs=1, state=state, sync=sync())

    assert resumed == uninterrupted[90:]
    assert dataset.read == list(range(900, 1000))


def test_a_look_ahead_longer_than_kept_reads_again_less_than_look_ahead_batches() -> None:
    """A sync agreeing every 200 steps, saved just after an agreement (the loop holds
    199 batches it took to agree): the state at the loop's position is gone, but one
    every ``LOOK_AHEAD`` positions before it is kept."""

    def loader(dataset: PositionedStream) -> StatefulDataLoader[Any]:
        return StatefulDataLoader(dataset, batch_size=1)

    sync = OneProcessSync(200)
    uninterrupted, _ = run(loader(PositionedStream(1000)), max_epochs=1, sync=sync)
    _, state = run(loader(PositionedStream(1000)), max_epochs=1, stop_at=400, sync=sync)
    dataset = PositionedStream(1000)

    resumed, _ = run(loader(dataset), max_epochs=1, state=state, sync=OneProcessSync(200))

    assert resumed == uninterrupted[401:]
    assert dataset.read == list(range(6 * LOOK_AHEAD, 1000))  # from batch 384 on, not 0


def test_the_state_dict_carries_the_loaders_state_at_the_last_positions() -> None:
    _, state = run(StatefulDataLoader(PositionedStream(30), batch_size=3), max_epochs=1, stop_at=5)

    positions = state["data"]["stateful"]["positions"]
    # The loop read one batch ahead (the data has no length): 7 batches handed out.
    assert [position for position, _ in positions] == [1, 2, 3, 4, 5, 6, 7]
    assert positions[-2][1]["dataset_state"] == {"position": 18}


@pytest.mark.slow
@pytest.mark.parametrize("cut", [3, 9, 11])
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
