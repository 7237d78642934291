"""A mid-epoch resume through ``prepare`` skips batches by index, loading none of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import torch
from _torch_data import RecordingDataset, RecordingStream, WorkerTaggedDataset
from torch.utils.data import DataLoader, DistributedSampler

from dloop import Loop
from dloop_torch import prepare

EPOCHS = 3


def shuffled_loader(dataset: Any, **options: Any) -> DataLoader[Any]:
    """A DataLoader whose order depends only on the seed and ``set_epoch``."""
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=1, rank=0, shuffle=True, seed=1
    )
    return DataLoader(dataset, sampler=sampler, **options)


def ids(batch: Any) -> list[int]:
    return [int(i) for i in torch.as_tensor(batch).flatten()]


def run(data: Iterable[Any], *, stop_after: int | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Batches of a run of ``EPOCHS`` epochs, up to step ``stop_after``; its state there."""
    loop = Loop(prepare(data), max_epochs=EPOCHS)
    batches, state = [], {}
    for batch, _ in loop:
        batches.append(batch)
        if loop.state.step == stop_after:
            state = loop.state_dict()
            break
    return batches, state


def resume(data: Iterable[Any], state: dict[str, Any]) -> list[Any]:
    loop = Loop(prepare(data), max_epochs=EPOCHS)
    loop.load_state_dict(state)
    return [batch for batch, _ in loop]


# 18 samples in batches of 4: 5 batches per epoch, the last one of 2.
STEPS = EPOCHS * 5


@pytest.mark.parametrize("cut", range(STEPS - 1))
def test_resume_reproduces_the_uninterrupted_batches_and_loads_no_skipped_sample(
    cut: int,
) -> None:
    dataset = RecordingDataset(18)
    loader = shuffled_loader(dataset, batch_size=4)
    uninterrupted = [ids(batch) for batch in run(loader)[0]]
    assert len(uninterrupted) == STEPS
    _, state = run(loader, stop_after=cut)
    dataset.loaded.clear()

    resumed = [ids(batch) for batch in resume(loader, state)]

    assert resumed == uninterrupted[cut + 1 :]
    # Exactly the samples of the batches still to come were read, in their order.
    assert dataset.loaded == [i for batch in resumed for i in batch]


def collate_as_dict(samples: list[torch.Tensor]) -> dict[str, Any]:
    return {"ids": torch.cat(samples), "size": len(samples)}


@pytest.mark.parametrize(
    "make_loader",
    [
        pytest.param(
            lambda dataset: shuffled_loader(
                dataset, batch_size=4, drop_last=True, collate_fn=collate_as_dict
            ),
            id="collate_fn-and-drop_last",
        ),
        pytest.param(lambda dataset: shuffled_loader(dataset, batch_size=None), id="unbatched"),
    ],
)
def test_resume_keeps_the_loaders_batching_and_collate_fn(
    make_loader: Callable[[RecordingDataset], DataLoader[Any]],
) -> None:
    dataset = RecordingDataset(18)
    loader = make_loader(dataset)
    uninterrupted = run(loader)[0]
    cut = len(loader) + 1  # inside the second epoch
    _, state = run(loader, stop_after=cut)
    dataset.loaded.clear()

    resumed = resume(loader, state)

    assert len(resumed) == len(uninterrupted) - cut - 1
    for got, expected in zip(resumed, uninterrupted[cut + 1 :], strict=True):
        assert type(got) is type(expected)
        if isinstance(expected, dict):
            assert got["size"] == expected["size"] == 4
            assert torch.equal(got["ids"], expected["ids"])
        else:
            assert torch.equal(got, expected)
    assert len(dataset.loaded) == sum(
        len(ids(b["ids"] if isinstance(b, dict) else b)) for b in resumed
    )


@pytest.mark.slow
def test_resume_with_worker_processes_uses_them_and_reproduces_the_batches() -> None:
    loader = shuffled_loader(
        WorkerTaggedDataset(24), batch_size=4, num_workers=2, multiprocessing_context="spawn"
    )
    uninterrupted = run(loader)[0]
    cut = 8  # epoch 1, batch 2 of 6
    _, state = run(shuffled_loader(WorkerTaggedDataset(24), batch_size=4), stop_after=cut)

    resumed = resume(loader, state)

    assert [batch[:, 0].tolist() for batch in resumed] == [
        batch[:, 0].tolist() for batch in uninterrupted[cut + 1 :]
    ]
    workers = {int(worker) for batch in resumed for worker in batch[:, 1]}
    assert workers == {0, 1}


class UnsizedBatchSampler:
    """Batches of indices [0, 1], [2, 3], [4, 5], and no len()."""

    def __iter__(self) -> Iterator[list[int]]:
        return iter([[0, 1], [2, 3], [4, 5]])


def test_a_batch_sampler_without_len_resumes_by_index_too() -> None:
    dataset = RecordingDataset(6)
    loader = DataLoader(dataset, batch_sampler=UnsizedBatchSampler())
    uninterrupted = [ids(batch) for batch in run(loader)[0]]
    # dloop cannot tell that this batch sampler's order is fixed, and says so.
    with pytest.warns(UserWarning, match="cannot reproduce the order of UnsizedBatchSampler"):
        _, state = run(loader, stop_after=4)  # epoch 1, batch 1
    dataset.loaded.clear()

    resumed = [ids(batch) for batch in resume(loader, state)]

    assert resumed == uninterrupted[5:] == [[4, 5], [0, 1], [2, 3], [4, 5]]
    assert dataset.loaded == [4, 5, 0, 1, 2, 3, 4, 5]


def test_resume_over_an_iterable_dataset_reads_and_drops_the_batches_done() -> None:
    stream = RecordingStream(10)
    loader = DataLoader(stream, batch_size=3)  # no len: 4 batches, the last of 1
    uninterrupted = [ids(batch) for batch in run(loader)[0]]
    _, state = run(loader, stop_after=5)  # epoch 1, batch 1
    stream.loaded.clear()

    resumed = [ids(batch) for batch in resume(loader, state)]

    assert resumed == uninterrupted[6:]
    # No index to skip by: the two batches done in epoch 1 were read again, then dropped.
    assert stream.loaded == list(range(10)) * 2


def test_iter_from_starts_at_the_given_batch_of_the_current_epoch() -> None:
    dataset = RecordingDataset(10)
    prepared = prepare(shuffled_loader(dataset, batch_size=3))
    prepared.set_epoch(2)
    whole_epoch = [ids(batch) for batch in prepared]
    dataset.loaded.clear()

    rest = [ids(batch) for batch in prepared.iter_from(2)]

    assert rest == whole_epoch[2:]
    assert dataset.loaded == [i for batch in rest for i in batch]


@pytest.mark.parametrize(
    ("start", "error", "message"),
    [
        (5, ValueError, "cannot resume at batch 5 of the epoch: the DataLoader has 4 batches"),
        (-1, ValueError, "start must be an int >= 0.*, got -1"),
        (1.0, TypeError, "start must be an int >= 0.*, got 1.0"),
    ],
)
def test_iter_from_rejects_a_start_outside_the_epoch(
    start: object, error: type, message: str
) -> None:
    prepared = prepare(DataLoader(RecordingDataset(10), batch_size=3))

    with pytest.raises(error, match=message):
        prepared.iter_from(start)  # type: ignore[arg-type]
