"""``prepare``: a DataLoader made ready for ``dloop.Loop``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any, Generic, TypeVar

import torch
from torch.utils.data import DataLoader

from dloop._validation import as_count
from dloop_torch._device import as_device, prefetch_to_cuda, to_device
from dloop_torch._resume import drop_first, loader_from, skips_by_index

T = TypeVar("T")


class PreparedData(Generic[T]):
    """A DataLoader (or any re-iterable of batches) ready to hand to ``dloop.Loop``.

    Made by ``prepare``. Iterating it iterates the DataLoader once (one epoch), with
    batches on ``device`` when one is set; ``len`` is the DataLoader's; ``set_epoch``
    reaches the sampler, the batch sampler and the dataset; ``iter_from`` resumes inside
    an epoch without loading the batches before it.
    """

    __slots__ = ("_copy_stream", "dataloader", "device", "prefetch")

    def __init__(self, dataloader: Iterable[T], *, device: object, prefetch: int) -> None:
        kind = type(dataloader)
        if isinstance(dataloader, (str, bytes)) or not (
            hasattr(kind, "__iter__") or hasattr(kind, "__getitem__")
        ):
            raise TypeError(
                "dataloader must be a torch DataLoader or another re-iterable of batches, "
                f"got {dataloader!r} (a {type(dataloader).__name__})"
            )
        as_count("prefetch", prefetch)
        parsed = as_device(device)
        self.dataloader: Iterable[T] = dataloader
        """The DataLoader (or iterable) given to ``prepare``."""
        self.device: torch.device | None = (
            None if parsed is None or parsed.type == "cpu" else parsed
        )
        """Where batches are moved; None when they are passed through as they come."""
        self.prefetch = prefetch
        """How many batches are copied ahead of the one in use (CUDA only)."""
        self._copy_stream: torch.cuda.Stream | None = None

    def __iter__(self) -> Iterator[T]:
        """One epoch of batches, on ``device`` when one is set."""
        return self._to_device(iter(self.dataloader))

    def __len__(self) -> int:
        """The DataLoader's length: batches per epoch.

        Raises:
            TypeError: When the DataLoader has no length (an IterableDataset without
                ``__len__``, a generator), so that the loop finds epoch ends by itself.
        """
        if not isinstance(self.dataloader, Sized):
            raise TypeError(f"the data {self.dataloader!r} has no len()")
        return len(self.dataloader)

    def set_epoch(self, epoch: int) -> None:
        """Call ``set_epoch(epoch)`` on everything of the DataLoader that has it.

        That is the DataLoader's sampler, its batch sampler, the batch sampler's sampler
        and its dataset (or an iterable's own ``set_epoch``), each distinct object once, so
        that a ``DistributedSampler`` shuffles differently in every epoch.
        """
        as_count("epoch", epoch, minimum=0)
        for target in _epoch_targets(self.dataloader):
            target.set_epoch(epoch)

    def iter_from(self, start: int) -> Iterator[T]:
        """The current epoch's batches from batch ``start`` on (0-based), for a resume.

        A DataLoader over a map-style dataset skips the first ``start`` batches of its
        (already ``set_epoch``'d) batch sampler, so the dataset never loads them; its
        other options (workers, collate_fn, pinning, generator, ...) are kept. Other data
        (an IterableDataset, a plain iterable) is read and the first ``start`` batches
        dropped, before they reach the device.

        Raises:
            TypeError, ValueError: ``start`` is not an int >= 0, or is beyond the batches
                of the epoch.
        """
        as_count("start", start, minimum=0)
        if start == 0:
            return iter(self)
        data = self.dataloader
        if skips_by_index(data):
            length = _length(data)
            if length is not None and start > length:
                raise ValueError(
                    f"cannot resume at batch {start} of the epoch: the DataLoader has "
                    f"{length} batches per epoch"
                )
            return self._to_device(iter(loader_from(data, start)))
        own_iter_from = getattr(data, "iter_from", None)
        if callable(own_iter_from):
            return self._to_device(iter(own_iter_from(start)))
        return self._to_device(drop_first(iter(data), start))

    def _to_device(self, batches: Iterator[T]) -> Iterator[T]:
        device = self.device
        if device is None:
            return batches
        if device.type != "cuda":
            return to_device(batches, device)
        index: int | None = device.index  # None for plain "cuda"
        if index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self._copy_stream is None or self._copy_stream.device != device:
            self._copy_stream = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        return prefetch_to_cuda(
            batches, device=device, prefetch=self.prefetch, copy_stream=self._copy_stream
        )

    def __repr__(self) -> str:
        return (
            f"PreparedData({self.dataloader!r}, device={self.device!r}, prefetch={self.prefetch!r})"
        )


def _length(data: Sized) -> int | None:
    """``len(data)``, or None when it raises TypeError (a batch sampler without len)."""
    try:
        return len(data)
    except TypeError:
        return None


def _epoch_targets(data: object) -> list[Any]:
    """The distinct objects of ``data`` with a callable ``set_epoch``, in calling order."""
    candidates: list[object] = [data]
    if isinstance(data, DataLoader):
        batch_sampler = data.batch_sampler
        candidates += [
            data.sampler,
            batch_sampler,
            getattr(batch_sampler, "sampler", None),
            data.dataset,
        ]
    targets: list[Any] = []
    for candidate in candidates:
        if candidate is None or any(candidate is target for target in targets):
            continue
        if callable(getattr(candidate, "set_epoch", None)):
            targets.append(candidate)
    return targets


def prepare(
    dataloader: Iterable[T], *, device: torch.device | str | int | None = None, prefetch: int = 2
) -> PreparedData[T]:
    """Make a torch DataLoader ready for ``dloop.Loop``: epochs, resume and device.

    ``Loop(prepare(loader, device="cuda"), ...)`` then:

    - calls ``set_epoch(epoch)`` before every epoch (resumes too) on the loader's
      sampler, batch sampler, the batch sampler's sampler and dataset, where they have
      it, each object once, so that a ``DistributedSampler`` reshuffles every epoch;
    - resumes inside an epoch by skipping indices in the batch sampler: the skipped
      samples are never loaded (a DataLoader over an IterableDataset is read and the
      skipped batches dropped);
    - with a CUDA ``device``, copies each batch (tensors nested in tuples, lists, dicts,
      namedtuples and dataclasses) ``prefetch`` batches ahead, non-blocking from pinned
      memory on a side stream; the stream of the code that uses a batch waits for its
      copies. With ``device`` None or CPU, batches pass through untouched. Other
      devices get a plain ``.to(device)`` as each batch is asked for.

    ``len`` is the loader's; errors raised by the loader reach the loop unchanged.

    Args:
        dataloader: A ``torch.utils.data.DataLoader``, or any re-iterable of batches.
        device: Where batches go: None (default) or ``"cpu"`` to leave them as they are,
            ``"cuda"``, ``"cuda:1"``, a device index or a ``torch.device``.
        prefetch: How many batches are copied ahead of the one in use (an int >= 1);
            each costs the device memory of one batch.

    Raises:
        TypeError, ValueError: For a ``dataloader`` that is not iterable, a ``prefetch``
            that is not an int >= 1, or a ``device`` torch cannot parse or this machine
            does not have (such as ``"cuda"`` without CUDA).
    """
    return PreparedData(dataloader, device=device, prefetch=prefetch)
