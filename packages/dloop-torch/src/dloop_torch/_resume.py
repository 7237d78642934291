"""Resume inside an epoch without loading the batches that were already done."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Any, TypeGuard, TypeVar

import torch
from torch.utils.data import DataLoader, IterableDataset

from dloop_torch._order import EpochStart, Sources, replaying

T = TypeVar("T")


class Remaining(Iterable[T]):
    """A batch sampler (or sampler) that hands out the rest of one epoch's indices once."""

    __slots__ = ("items",)

    def __init__(self, items: Iterator[T]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[T]:
        return self.items


def is_stateful_loader(loader: object) -> TypeGuard[DataLoader[Any]]:
    """Whether ``loader`` is a torchdata ``StatefulDataLoader`` (exactly that class; a
    subclass may iterate its own way). torchdata is never imported here."""
    module = sys.modules.get("torchdata.stateful_dataloader")
    return module is not None and type(loader) is module.StatefulDataLoader


def is_known_loader(loader: object) -> TypeGuard[DataLoader[Any]]:
    """Whether ``loader`` iterates as a plain DataLoader does: ``DataLoader`` itself or
    torchdata's ``StatefulDataLoader``, not a subclass (which may yield other batches,
    move them to a device, ... in its own ``__iter__``)."""
    return type(loader) is DataLoader or is_stateful_loader(loader)


def skips_by_index(loader: object) -> TypeGuard[DataLoader[Any]]:
    """Whether ``loader`` is a known DataLoader whose batches come from a sampler of
    indices into a map-style dataset, so that batches can be skipped by index."""
    return is_known_loader(loader) and not isinstance(loader.dataset, IterableDataset)


_WRAPPED = ("_dataloader", "base_dataloader", "dataloader")
"""Where loader wrappers keep the DataLoader they wrap: Lightning Fabric's
``_FabricDataLoader`` in ``_dataloader``, Accelerate's ``DataLoaderShard`` and
``DataLoaderDispatcher`` in ``base_dataloader``."""


def inner_loader(data: object) -> DataLoader[Any] | None:
    """The DataLoader whose samplers, generator, workers and iterator make the batches of
    ``data``: ``data`` itself (a DataLoader or a subclass), or the one a wrapper keeps
    (in an attribute of ``_WRAPPED``), unwrapped down to a real DataLoader.

    Accelerate's wrappers claim to be DataLoaders (their ``__class__`` is the wrapped
    loader's, so ``isinstance`` says yes) while the wrapped loader does the work:
    attributes set on the wrapper (``generator``, ``_iterator``) would never reach it.
    So a wrapper is recognised by its real type, ``type(data)``.
    """
    seen: list[object] = []
    current = data
    while not any(current is known for known in seen):
        if issubclass(type(current), DataLoader):
            return current  # type: ignore[return-value]  # issubclass does not narrow
        seen.append(current)
        for name in _WRAPPED:
            inner = getattr(current, name, None)
            if isinstance(inner, DataLoader):
                current = inner
                break
        else:
            break
    # Claims to be a DataLoader and keeps none where dloop looks: take it at its word.
    return data if isinstance(data, DataLoader) else None


def loader_from(
    loader: DataLoader[Any],
    start: int,
    *,
    sources: Sources,
    epoch_start: EpochStart,
    strict: bool = True,
) -> DataLoader[Any]:
    """A DataLoader like ``loader`` (same dataset, sampler objects, collate_fn, workers,
    pinning, ...) whose iteration starts at batch ``start`` of the epoch that began at
    ``epoch_start``.

    With the random sources as they were at ``epoch_start``, the draws of the epoch's
    ``iter(loader)`` are made again (the index sampler's ``iter``, the workers' base
    seed, the sampler's first draws), and the first ``start`` batches of indices drawn
    from the batch sampler (or the sampler, without automatic batching) and dropped:
    their samples are never loaded. torch's global generator is then put back as it
    was. The rest of the indices are drawn lazily, as the uninterrupted iteration would.
    The returned DataLoader draws its base seed from a private generator, so its workers
    get the uninterrupted seed and the caller's generators are not touched again. Its
    workers do not persist: it serves the rest of one epoch.

    Raises:
        ValueError: The epoch has fewer than ``start`` batches, when ``strict`` (the
            loader has a length); otherwise the returned DataLoader yields nothing.
    """
    index_sampler: Iterable[Any] = (
        loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    )
    base_seed = torch.Generator()
    with replaying(sources, epoch_start):
        # In the order of torch's DataLoader iterator: iter() of the index sampler (which
        # draws at once for torchdata's samplers), then the base seed.
        indices = iter(index_sampler)
        source = loader.generator
        # A base seed drawn from the global generator matters only to workers; without
        # them that generator is not replayed, and is not drawn from here either.
        if epoch_start.draws_base_seed and (
            source is not None or epoch_start.global_state is not None
        ):
            base_seed.set_state(torch.get_rng_state() if source is None else source.get_state())
            torch.empty((), dtype=torch.int64).random_(generator=source)
        # At least one batch, so that the sampler's first (global) draws happen here.
        taken = list(islice(indices, max(start, 1)))
    if strict and len(taken) < start:
        raise ValueError(
            f"cannot resume at batch {start} of the epoch: the DataLoader has {len(taken)} "
            "batches in it"
        )
    rest: Remaining[Any] = Remaining(chain(taken[start:], indices))
    options: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": base_seed,
        "prefetch_factor": loader.prefetch_factor,
        "persistent_workers": False,
        "pin_memory_device": loader.pin_memory_device,
    }
    if hasattr(loader, "in_order"):  # torch >= 2.6
        options["in_order"] = loader.in_order
    if loader.batch_sampler is not None:
        return DataLoader(loader.dataset, batch_sampler=rest, **options)
    return DataLoader(loader.dataset, sampler=rest, batch_size=None, **options)


def drop_first(batches: Iterator[T], start: int, *, strict: bool = True) -> Iterator[T]:
    """``batches`` after drawing and dropping ``start`` of them (data that can only be
    read in order, such as a DataLoader over an IterableDataset).

    Raises:
        ValueError: ``batches`` ends before ``start`` batches were drawn, when
            ``strict`` (data whose length is known); otherwise the exhausted
            ``batches`` are returned, for the loop to find the epoch ended there.
    """
    dropped = sum(1 for _ in islice(batches, start))
    if strict and dropped < start:
        raise ValueError(
            f"cannot resume at batch {start} of the epoch: the data yielded only {dropped} "
            "batches in it"
        )
    return batches
