"""How one epoch of a DataLoader is iterated: when its first draws happen, how it ends."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader

T = TypeVar("T")


def first_iter(
    data: Iterable[T],
    loader: DataLoader[Any],
    *,
    draws_base_seed: bool,
    pull: bool = False,
    opening: Callable[[], Iterator[T]] | None = None,
) -> Iterator[T]:
    """``iter(data)`` (or ``opening()``: the data's own ``iter_from``); with ``pull``, its
    first batch is drawn now, so that the epoch's first random draws happen now. Without
    ``draws_base_seed`` (persistent workers that the uninterrupted run would still have),
    the base seed of new workers comes from a throwaway generator, so that the loader's
    own generators are not drawn from."""
    opened = opening if opening is not None else lambda: iter(data)
    if draws_base_seed:
        return _started(opened()) if pull else opened()
    saved = loader.generator
    loader.generator = torch.Generator()
    try:
        return _started(opened())
    finally:
        loader.generator = saved


def to_the_end(batches: Iterator[T], count: int) -> Iterator[T]:
    """``batches``, the last of ``count`` handed out only after asking for one more.

    So the epoch's iterator has run out (and its sampler made its last draws, such as
    the permutation a ``RandomSampler`` draws after its last index) when the loop gets
    the epoch's last batch, whether the loop asks again or not: a state dict saved on
    that step holds the generators as the next epoch will find them.
    """
    for index, batch in enumerate(batches, start=1):
        if index == count:
            extra = next(batches, _END)
            yield batch
            if extra is not _END:  # more than len(): the loop reports it
                yield extra
                yield from batches
            return
        yield batch


_END: Any = object()

_FABRIC_WRAPPERS = frozenset({"lightning_fabric.wrappers", "lightning.fabric.wrappers"})
"""Modules of Lightning Fabric's ``_FabricDataLoader`` (standalone and in ``lightning``)."""


def follow_epoch(data: object, epoch: int) -> None:
    """Tell a loader wrapper that counts epochs by itself which epoch comes next.

    Lightning Fabric's ``_FabricDataLoader`` calls ``set_epoch(n)`` on its sampler at its
    n-th ``iter()``, after dloop's ``set_epoch``: in a resumed run, or an epoch after a
    resume, n is not the loop's epoch, and a ``DistributedSampler`` would shuffle as in
    another epoch. Its count (``_num_iter_calls``) is set to ``epoch``; other data is
    left alone.
    """
    if type(data).__module__ in _FABRIC_WRAPPERS and hasattr(data, "_num_iter_calls"):
        data._num_iter_calls = epoch


def _started(batches: Iterator[T]) -> Iterator[T]:
    """``batches`` with its first item drawn now (and handed out first)."""
    for first in batches:
        return chain((first,), batches)
    return batches
