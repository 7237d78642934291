"""Resume inside the padding of ``uneven="longest"`` through ``prepare``, over data whose
length is unknown (a DataLoader, or torchdata's StatefulDataLoader, over an
IterableDataset per rank): threads with a ``ThreadSync`` stand in for processes.

The core resumes every process at the same step; a process whose epoch ended before it
(rank 1, in padding) finds that out from ``iter_from(start)`` yielding nothing, and pads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader  # type: ignore[import-untyped]

from dloop import Loop, LoopEvents
from dloop.testing import ThreadSync
from dloop_torch import prepare

BATCHES = (10, 7)
"""Batches of rank 0 and rank 1 (of 2 samples each): rank 1 pads on steps 7 to 9."""
NAMES: dict[object, str] = {event: event.name for event in LoopEvents}
TORCHDATA_WARNS = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")
"""torchdata's StatefulDataLoader calls a torch function that torch 2.13 deprecates."""


class Stream(IterableDataset[int]):
    """Rank ``rank``'s samples, ``rank * 1000 + index``, as a stream without a length."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        first = self.rank * 1000
        return iter(range(first, first + 2 * BATCHES[self.rank]))


def make_loop(rank: int, sync: ThreadSync, kind: str = "loader") -> Loop[Any]:
    loader_class = StatefulDataLoader if kind == "stateful" else DataLoader
    loader = loader_class(Stream(rank), batch_size=2)
    return Loop(prepare(loader), max_epochs=1, sync=sync, uneven="longest")


def in_threads(work: Callable[[int, ThreadSync], Any]) -> list[Any]:
    """``work(rank, sync)`` for ranks 0 and 1 in two threads sharing one ThreadSync."""
    sync = ThreadSync(2, every_n_steps=4, timeout=20)
    results: list[Any] = [None, None]

    def run(rank: int) -> None:
        try:
            results[rank] = work(rank, sync)
        except Exception as error:  # reported below, with the rank
            results[rank] = error

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    failed = [r for r in results if r is None or isinstance(r, Exception)]
    assert not failed, f"a rank hung or failed: {results!r}"
    return results


def trace(loop: Loop[Any], *, until_step: int | None = None) -> list[Any]:
    """(step, epoch, event names, samples or None) for each step the loop yields."""
    steps: list[Any] = []
    for batch, events in loop:
        samples = None if batch is None else torch.as_tensor(batch).tolist()
        steps.append((loop.state.step, loop.state.epoch, sorted(NAMES[e] for e in events), samples))
        if loop.state.step == until_step:
            break
    return steps


@pytest.mark.parametrize("kind", ["loader", pytest.param("stateful", marks=TORCHDATA_WARNS)])
@pytest.mark.parametrize("cut", range(9))
def test_each_rank_resumed_from_its_own_state_dict_finishes_as_the_uninterrupted_run(
    cut: int, kind: str
) -> None:
    full = in_threads(lambda rank, sync: trace(make_loop(rank, sync, kind)))
    padding = [step for step, _, events, samples in full[1] if "PADDING" in events]
    assert padding == [7, 8, 9]
    assert all(samples is None for _, _, _, samples in full[1][7:])

    def first_part(rank: int, sync: ThreadSync) -> tuple[list[Any], Any]:
        loop = make_loop(rank, sync, kind)
        steps = trace(loop, until_step=cut)
        return steps, json.loads(json.dumps(loop.state_dict()))

    first = in_threads(first_part)

    def rest(rank: int, sync: ThreadSync) -> list[Any]:
        loop = make_loop(rank, sync, kind)
        loop.load_state_dict(first[rank][1])  # this rank's own state dict
        return trace(loop)

    resumed = in_threads(rest)
    for rank in (0, 1):
        assert first[rank][0] + resumed[rank] == full[rank], rank


class SizedStream(Stream):
    """The same stream with a length: 2 * BATCHES[rank] samples."""

    def __len__(self) -> int:
        return 2 * BATCHES[self.rank]


@pytest.mark.parametrize(
    ("kind", "start", "left"),
    [
        ("iterable-dataset", 7, []),
        ("iterable-dataset", 9, []),
        ("iterable-dataset", 6, [[1012, 1013]]),
        pytest.param("stateful-loader", 7, [], marks=TORCHDATA_WARNS),
        pytest.param("stateful-loader", 12, [], marks=TORCHDATA_WARNS),
        ("generator", 9, []),
    ],
)
def test_iter_from_beyond_the_batches_of_data_of_unknown_length_yields_what_is_left(
    kind: str, start: int, left: list[Any]
) -> None:
    """A process whose epoch ended before the resumed step (rank 1 in padding) gets an
    empty iterator, not an error: the loop then pads (or says why it cannot)."""
    data: Any
    if kind == "iterable-dataset":
        data = DataLoader(Stream(1), batch_size=2)
    elif kind == "stateful-loader":
        data = StatefulDataLoader(Stream(1), batch_size=2)
    else:
        data = (torch.tensor([2 * i, 2 * i + 1]) + 1000 for i in range(BATCHES[1]))
    prepared = prepare(data)

    rest = [torch.as_tensor(batch).tolist() for batch in prepared.iter_from(start)]

    assert rest == left


def test_iter_from_beyond_a_known_length_is_still_refused() -> None:
    prepared = prepare(DataLoader(SizedStream(1), batch_size=2))

    with pytest.raises(ValueError, match=r"cannot resume at batch 9 of the epoch.* only 7"):
        list(prepared.iter_from(9))
