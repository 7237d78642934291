"""Resume inside an epoch without loading the batches that were already done."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from itertools import islice
from typing import Any, Generic, TypeGuard, TypeVar

from torch.utils.data import DataLoader, IterableDataset

T = TypeVar("T")


class SkipFirst(Generic[T]):
    """The items of ``items`` from index ``start`` on, drawn afresh on every iteration.

    Wrapped around a sampler or a batch sampler it skips indices, not samples: the
    dataset is never asked for what is dropped.
    """

    __slots__ = ("items", "start")

    def __init__(self, items: Iterable[T], start: int) -> None:
        self.items = items
        self.start = start

    def __iter__(self) -> Iterator[T]:
        return islice(iter(self.items), self.start, None)

    def __len__(self) -> int:
        if not isinstance(self.items, Sized):
            raise TypeError(f"{self.items!r} has no len()")
        return max(0, len(self.items) - self.start)


def skips_by_index(dataloader: object) -> TypeGuard[DataLoader[Any]]:
    """Whether ``dataloader`` is a DataLoader whose batches come from a sampler of
    indices into a map-style dataset, so that batches can be skipped by index."""
    return isinstance(dataloader, DataLoader) and not isinstance(
        dataloader.dataset, IterableDataset
    )


def loader_from(dataloader: DataLoader[Any], start: int) -> DataLoader[Any]:
    """A DataLoader like ``dataloader`` (same dataset, sampler objects, collate_fn,
    workers, pinning, generator, ...) whose iteration starts at batch ``start``.

    The first ``start`` batches of indices are drawn from the batch sampler (or the
    sampler, without automatic batching) and dropped, so their samples are never loaded.
    Its workers do not persist: it serves the rest of one epoch.
    """
    options: dict[str, Any] = {
        "num_workers": dataloader.num_workers,
        "collate_fn": dataloader.collate_fn,
        "pin_memory": dataloader.pin_memory,
        "timeout": dataloader.timeout,
        "worker_init_fn": dataloader.worker_init_fn,
        "multiprocessing_context": dataloader.multiprocessing_context,
        "generator": dataloader.generator,
        "prefetch_factor": dataloader.prefetch_factor,
        "persistent_workers": False,
        "pin_memory_device": dataloader.pin_memory_device,
    }
    if hasattr(dataloader, "in_order"):  # torch >= 2.6
        options["in_order"] = dataloader.in_order
    if dataloader.batch_sampler is not None:
        return DataLoader(
            dataloader.dataset,
            batch_sampler=SkipFirst(dataloader.batch_sampler, start),
            **options,
        )
    return DataLoader(
        dataloader.dataset,
        sampler=SkipFirst(dataloader.sampler, start),
        batch_size=None,
        **options,
    )


def drop_first(batches: Iterator[T], start: int) -> Iterator[T]:
    """``batches`` after drawing and dropping ``start`` of them (data that can only be
    read in order, such as a DataLoader over an IterableDataset).

    Raises:
        ValueError: ``batches`` ends before ``start`` batches were drawn.
    """
    dropped = sum(1 for _ in islice(batches, start))
    if dropped < start:
        raise ValueError(
            f"cannot resume at batch {start} of the epoch: the data yielded only {dropped} "
            "batches in it"
        )
    return batches
