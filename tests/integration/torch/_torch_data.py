"""Instrumented datasets and samplers shared by the torch tests.

Module-level classes, so that DataLoader worker processes started with "spawn" can
unpickle them (pytest puts this folder on ``sys.path``, and spawned children inherit it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    get_worker_info,
)


class RecordingDataset(Dataset[torch.Tensor]):
    """``size`` samples, sample i being ``tensor([i])``; ``loaded`` lists every index read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        self.loaded.append(index)
        return torch.tensor([index])


class WorkerTaggedDataset(Dataset[torch.Tensor]):
    """Sample i is ``tensor([i, worker id])``, the worker id being -1 in the main process."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        worker = get_worker_info()
        return torch.tensor([index, -1 if worker is None else worker.id])


class RecordingStream(IterableDataset[torch.Tensor]):
    """An iterable dataset of ``tensor([i])`` for i < size that records what it yields."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.loaded: list[int] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index in range(self.size):
            self.loaded.append(index)
            yield torch.tensor([index])


class FailingDataset(Dataset[torch.Tensor]):
    """Sample i is ``tensor([i])``, except that reading ``fail_at`` raises ``error``."""

    def __init__(self, size: int, fail_at: int) -> None:
        self.size = size
        self.fail_at = fail_at
        self.error = KeyError(f"sample {fail_at} is corrupt")

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == self.fail_at:
            raise self.error
        return torch.tensor([index])


class EpochLog:
    """The ``set_epoch`` calls of every object below, in order, as (name, epoch)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []


class EpochSampler(Sampler[int]):
    """A sequential sampler over ``size`` indices with a recorded ``set_epoch``."""

    def __init__(self, size: int, log: EpochLog, name: str = "sampler") -> None:
        self.size = size
        self.log = log
        self.name = name

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.size))

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.log.calls.append((self.name, epoch))


class EpochBatchSampler(BatchSampler):
    """A BatchSampler with a recorded ``set_epoch``."""

    def __init__(self, sampler: Sampler[int], batch_size: int, log: EpochLog) -> None:
        super().__init__(sampler, batch_size=batch_size, drop_last=False)
        self.log = log

    def set_epoch(self, epoch: int) -> None:
        self.log.calls.append(("batch_sampler", epoch))


class EpochDataset(Dataset[torch.Tensor]):
    """Sample i is ``tensor([i])``; ``set_epoch`` calls and reads go to ``log``."""

    def __init__(self, size: int, log: EpochLog) -> None:
        self.size = size
        self.log = log

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        self.log.calls.append(("load", index))
        return torch.tensor([index])

    def set_epoch(self, epoch: int) -> None:
        self.log.calls.append(("dataset", epoch))


class SeedableRandomSampler(RandomSampler):
    """A test double of Accelerate's ``accelerate.data_loader.SeedableRandomSampler``,
    which Accelerate puts in place of a DataLoader's RandomSampler: the same code, under
    the same module and class name (dloop recognises it by them, without importing
    Accelerate). Every ``__iter__`` reseeds the generator with ``initial_seed + epoch``
    and counts the epoch up when the pass ends."""

    def __init__(self, *args: Any, data_seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial_seed = data_seed if data_seed is not None else torch.random.initial_seed()
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        if self.generator is None:
            self.generator = torch.Generator(device=torch.get_default_device())
            self.generator.manual_seed(self.initial_seed)
        seed = self.epoch + self.initial_seed
        self.generator.manual_seed(seed)
        yield from super().__iter__()
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


SeedableRandomSampler.__module__ = "accelerate.data_loader"
