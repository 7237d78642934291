"""How one epoch of a DataLoader is iterated: when its first draws happen, how it ends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader

T = TypeVar("T")


def first_iter(
    data: Iterable[T], loader: DataLoader[Any], *, draws_base_seed: bool, pull: bool = False
) -> Iterator[T]:
    """``iter(data)``; with ``pull``, its first batch is drawn now, so that the epoch's
    first random draws happen now. Without ``draws_base_seed`` (persistent workers that
    the uninterrupted run would still have), the base seed of new workers comes from a
    throwaway generator, so that the loader's own generators are not drawn from."""
    if draws_base_seed:
        return _started(iter(data)) if pull else iter(data)
    saved = loader.generator
    loader.generator = torch.Generator()
    try:
        return _started(iter(data))
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


def _started(batches: Iterator[T]) -> Iterator[T]:
    """``batches`` with its first item drawn now (and handed out first)."""
    for first in batches:
        return chain((first,), batches)
    return batches
