"""``prepare``: a DataLoader made ready for ``dloop.Loop``."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any, Generic, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from dloop._validation import as_count
from dloop_torch._device import as_device, prefetch_to_cuda, to_device
from dloop_torch._epoch import first_iter, follow_epoch, to_the_end
from dloop_torch._order import EpochStart, Order, no_record_warning, replaying, warn_user
from dloop_torch._resume import (
    drop_first,
    inner_loader,
    is_stateful_loader,
    loader_from,
    skips_by_index,
)
from dloop_torch._stateful import StatefulPositions
from dloop_torch._workers import restarts_workers, stop_persistent_workers, workers_warning

T = TypeVar("T")


class PreparedData(Generic[T]):
    """A DataLoader (or any re-iterable of batches) ready to hand to ``dloop.Loop``.

    Made by ``prepare``. Iterating it iterates the DataLoader once (one epoch), with
    batches on ``device`` when one is set; ``len`` is the DataLoader's; ``set_epoch``
    reaches the sampler, the batch sampler and the dataset; ``iter_from`` resumes inside
    an epoch without loading the batches before it; ``dloop_state_dict`` and
    ``dloop_load_state_dict`` carry what the epoch's order depends on through the loop's
    state dict.
    """

    __slots__ = (
        "_copy_stream",
        "_epoch",
        "_loader",
        "_order",
        "_restarts_workers",
        "_stateful",
        "dataloader",
        "device",
        "prefetch",
    )

    def __init__(self, dataloader: Iterable[T], *, device: object, prefetch: int) -> None:
        _check_dataloader(dataloader)
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
        self._epoch = 0
        self._loader = inner_loader(dataloader)
        self._stateful: StatefulPositions | None = None
        self._order: Order | None = None
        if is_stateful_loader(dataloader) and isinstance(dataloader.dataset, IterableDataset):
            self._stateful = StatefulPositions(dataloader)
        elif self._loader is not None:
            self._order = Order(self._loader)
        self._restarts_workers = self._loader is not None and restarts_workers(self._loader)
        if self._restarts_workers:
            warn_user(workers_warning(self._loader))

    def __iter__(self) -> Iterator[T]:
        """One epoch of batches, on ``device`` when one is set."""
        return self._batches(0)

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
        that a ``DistributedSampler`` shuffles differently in every epoch. Persistent
        workers of a DataLoader whose dataset has ``set_epoch`` are stopped first, so that
        the epoch's workers start with the dataset of that epoch.
        """
        as_count("epoch", epoch, minimum=0)
        self._epoch = epoch
        if self._restarts_workers and self._loader is not None:
            stop_persistent_workers(self._loader)
        for target in _epoch_targets(self.dataloader, self._loader):
            target.set_epoch(epoch)
        follow_epoch(self.dataloader, epoch)

    def iter_from(self, start: int) -> Iterator[T]:
        """The current epoch's batches from batch ``start`` on (0-based), for a resume.

        A DataLoader over a map-style dataset skips the first ``start`` batches of its
        (already ``set_epoch``'d) batch sampler, so the dataset never loads them; its
        other options (workers, collate_fn, pinning, ...) are kept, and the order is the
        one the epoch had (see ``dloop_state_dict``). Other data (a DataLoader subclass,
        a wrapper, a plain iterable) resumes through its own ``iter_from(start)`` when it
        has one (with the order's random state of the epoch's start, for a loader);
        without, it is read and the first ``start`` batches dropped (an IterableDataset
        too), before they reach the device.

        Data of unknown length (``len`` raises TypeError: an IterableDataset without
        ``__len__``, a stream) may have fewer than ``start`` batches in this epoch, as a
        process whose epoch ended before the resumed step under ``uneven="longest"``
        does: the iterator then yields only what is left after ``start``, which may be
        nothing, and the loop finds the epoch ended there.

        Raises:
            TypeError, ValueError: ``start`` is not an int >= 0, or is beyond the batches
                of the epoch when the data has a length.
        """
        as_count("start", start, minimum=0)
        data = self.dataloader
        length = _length(data) if isinstance(data, Sized) else None
        if start and length is not None and skips_by_index(data) and start > length:
            raise ValueError(
                f"cannot resume at batch {start} of the epoch: the DataLoader has "
                f"{length} batches per epoch"
            )
        return self._batches(start, strict=length is not None)

    def dloop_state_dict(self) -> dict[str, Any] | None:
        """What the current epoch's order and position depend on, for the loop's state dict.

        For a DataLoader (``"order"``): the states of the random generators its order
        draws from (``loader.generator``, the samplers' generators, torch's global
        generator when they draw from it) at the start of the current epoch, and the
        samplers' generators as they are now. For a torchdata ``StatefulDataLoader`` over
        an IterableDataset (``"stateful"``): its own ``state_dict()`` after each batch
        that the loop may have taken without yielding it yet (those of any device
        prefetch, and ``LOOK_AHEAD`` = 64 more for the loop's own look-ahead), and after
        every 64th batch of the 512 before. The data's own ``dloop_state_dict()``, if it
        has one, goes under ``"data"``. When these are this process's own (a sampler that
        shuffles with its generators, a stream position; unlike the loop's position, the
        same on every process, or a DistributedSampler's order) and torch.distributed is
        initialized, the process's rank and the world size go under ``"process"``, so
        that loading it on another process warns. JSON built-in values; None when there
        is nothing to save.

        Warns:
            dloop.LoopWarning: A sampler dloop cannot replay is named, with what to use instead.
        """
        state: dict[str, Any] = {}
        if self._order is not None:
            state["order"] = self._order.state_dict(self._epoch)
        if self._stateful is not None:
            state["stateful"] = self._stateful.state_dict()
        own = getattr(self.dataloader, "dloop_state_dict", None)
        if callable(own):
            state["data"] = own()
        process = _this_process()
        if process is not None and self._own_to_this_process(state):
            state["process"] = process
        return state or None

    def _own_to_this_process(self, state: dict[str, Any]) -> bool:
        """Whether ``state`` (the data part) is this process's own: a sampler that shuffles
        with this process's generators, a StatefulDataLoader's position, the data's own
        state. A DistributedSampler's order comes from its seed and the epoch alone (the
        same on every process), as under Fabric and Accelerate, which save one checkpoint
        from rank 0 for every process."""
        shuffles = self._order is not None and self._order.sources.shuffles
        return shuffles or "stateful" in state or "data" in state

    def dloop_load_state_dict(self, state: object) -> None:
        """Take back ``dloop_state_dict``'s part, before the resumed epoch is iterated.

        Raises:
            ValueError: ``state`` was not saved from data of this kind.

        Warns:
            dloop.LoopWarning: ``state`` was saved by another process (another rank, or
                another world size) than this one, as torch.distributed says: this
                process takes that process's order and position in its data. Not an
                error, since a resume may re-shard on purpose.
        """
        expected = {
            "order": self._order is not None,
            "stateful": self._stateful is not None,
        }
        if not isinstance(state, dict) or any(
            (name in state) != present for name, present in expected.items()
        ):
            raise ValueError(
                f"state dict data {state!r} was not saved by prepare() over data like "
                f"{self.dataloader!r}: resume over the same kind of DataLoader"
            )
        if "process" in state:
            _check_process(state["process"])
        if self._order is not None:
            self._order.load_state_dict(state["order"])
        if self._stateful is not None:
            self._stateful.load_state_dict(state["stateful"])
        if "data" in state:
            load = getattr(self.dataloader, "dloop_load_state_dict", None)
            if not callable(load):
                raise ValueError(
                    f"state dict data holds the state of the data's own hooks, but "
                    f"{self.dataloader!r} has no dloop_load_state_dict()"
                )
            load(state["data"])

    def _batches(self, start: int, *, strict: bool = True) -> Iterator[T]:
        """The current epoch's batches from batch ``start`` on, as the loop takes them;
        without ``strict`` (data of unknown length), none when the epoch has fewer."""
        batches = self._to_device(self._epoch_batches(start, strict=strict))
        if self._stateful is not None:
            return self._stateful.taken(batches)
        return batches

    def _epoch_batches(self, start: int, *, strict: bool) -> Iterator[T]:
        """The host batches of the current epoch from batch ``start`` on."""
        data = self.dataloader
        if self._stateful is not None:
            return self._stateful.iterate(self._epoch, start, strict=strict)
        loader, order = self._loader, self._order
        if loader is None or order is None:  # an iterable that is not a DataLoader
            if start == 0:
                return iter(data)
            own_iter_from = getattr(data, "iter_from", None)
            if callable(own_iter_from):
                return iter(own_iter_from(start))
            return drop_first(iter(data), start, strict=strict)
        if order.replays_unrecorded(self._epoch, start):
            warn_user(no_record_warning(data, self._epoch, start, order.sources))
        draws_base_seed = self._draws_base_seed(loader)
        replay = order.begin(self._epoch, start, draws_base_seed=draws_base_seed)
        if replay is None:
            batches = first_iter(data, loader, draws_base_seed=draws_base_seed)
        elif skips_by_index(data):
            batches = iter(
                loader_from(data, start, sources=order.sources, epoch_start=replay, strict=strict)
            )
        else:
            batches = self._replayed(data, loader, start, replay, strict=strict)
        length = _length(data) if isinstance(data, Sized) else None
        return batches if length is None else to_the_end(batches, length - start)

    def _replayed(
        self,
        data: Iterable[T],
        loader: DataLoader[Any],
        start: int,
        replay: EpochStart,
        *,
        strict: bool,
    ) -> Iterator[T]:
        """The data's own iteration from batch ``start`` (a DataLoader subclass, a
        wrapper, an IterableDataset), with the random sources as they were at the epoch's
        start: from the data's own ``iter_from(start)`` when it has one (it knows how to
        skip), else the first batches are read and dropped."""
        assert self._order is not None
        own_iter_from = getattr(data, "iter_from", None)
        with replaying(self._order.sources, replay):
            if start and callable(own_iter_from):
                return first_iter(
                    data,
                    loader,
                    draws_base_seed=replay.draws_base_seed,
                    pull=True,
                    opening=lambda: iter(own_iter_from(start)),
                )
            batches = first_iter(
                data, loader, draws_base_seed=replay.draws_base_seed, pull=not start
            )
            if start:
                return drop_first(batches, start, strict=strict)
            return batches

    def _draws_base_seed(self, loader: DataLoader[Any]) -> bool:
        """Whether the uninterrupted run's ``iter(loader)`` draws the workers' base seed
        in this epoch: always, except when persistent workers started in epoch 0 still run.
        """
        persistent = loader.num_workers > 0 and loader.persistent_workers
        return not persistent or self._restarts_workers or self._epoch == 0

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


class _OneShotPreparedData(PreparedData[T], Iterator[T]):
    """``prepare`` over a one-shot iterator (a generator, a stream): a one-shot iterator
    itself, so that ``Loop`` treats it as one (rule 24: one pass, its end ends the run,
    no batch taken that is not yielded). With a CUDA ``device``, ``prefetch`` batches are
    read ahead of the one in use, as prefetching does."""

    __slots__ = ("_pass",)

    def __init__(self, dataloader: Iterator[T], *, device: object, prefetch: int) -> None:
        super().__init__(dataloader, device=device, prefetch=prefetch)
        self._pass: Iterator[T] | None = None

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._pass is None:
            self._pass = super().__iter__()
        return next(self._pass)

    def iter_from(self, start: int) -> Iterator[T]:
        """The stream after its next ``start`` batches, which are read and dropped; it
        yields nothing more when the stream has no more than ``start`` batches left."""
        self._pass = super().iter_from(start)
        return self


def _check_dataloader(dataloader: object) -> None:
    """Refuse what is not a re-iterable of batches: a non-iterable, text or bytes (whose
    iteration gives characters or ints), a mapping (whose iteration gives its keys).

    Raises:
        TypeError: Naming ``dataloader`` and the type given.
    """
    kind = type(dataloader)
    if not (hasattr(kind, "__iter__") or hasattr(kind, "__getitem__")):
        raise TypeError(
            "dataloader must be a torch DataLoader or another re-iterable of batches, "
            f"got {reprlib.repr(dataloader)} (a {kind.__name__})"
        )
    if isinstance(dataloader, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            "dataloader must be a torch DataLoader or another re-iterable of batches, not "
            f"a {kind.__name__}: got {reprlib.repr(dataloader)}"
        )
    if isinstance(dataloader, Mapping):
        raise TypeError(
            "dataloader must be a torch DataLoader or another re-iterable of batches, not "
            f"a mapping: iterating a {kind.__name__} gives its keys, got "
            f"{reprlib.repr(dataloader)}. For one batch that is a dict, pass [batch]; for "
            "batches stored as its values, pass list(dataloader.values())"
        )


def _this_process() -> dict[str, int] | None:
    """This process's rank and the world size, when torch.distributed is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size()}


def _check_process(saved: object) -> None:
    """Warn when a state dict's data part saved by process ``saved`` (its rank and world
    size) is loaded on another one.

    Raises:
        ValueError: ``saved`` is not ``{"rank": int, "world_size": int}``.
    """
    if not (
        isinstance(saved, dict)
        and set(saved) == {"rank", "world_size"}
        and all(type(value) is int for value in saved.values())
    ):
        raise ValueError(
            "state dict data['process'] must be {'rank': int, 'world_size': int} as "
            f"dloop_torch saves it, got {saved!r}"
        )
    here = _this_process()
    if here is None or here == saved:
        return
    warn_user(
        f"this process (rank {here['rank']} of {here['world_size']}) loads a state dict "
        f"saved by rank {saved['rank']} of {saved['world_size']}: its data part (the "
        "shuffle order's generator states, a StatefulDataLoader's position) is that "
        "process's own, so this process now follows that process's order. Save a state "
        "dict on every process and load each process's own (a file per rank, such as "
        "f'checkpoint-rank{rank}.json'); if you re-shard on purpose, silence this with "
        "warnings.filterwarnings('ignore', message='this process .* loads a state dict "
        "saved by rank')."
    )


def _length(data: Sized) -> int | None:
    """``len(data)``, or None when it raises TypeError (a batch sampler without len)."""
    try:
        return len(data)
    except TypeError:
        return None


def _epoch_targets(data: object, loader: DataLoader[Any] | None) -> list[Any]:
    """The distinct objects of ``data`` with a callable ``set_epoch``, in calling order:
    ``data``, then the sampler, batch sampler, its sampler and dataset of ``loader`` (the
    DataLoader ``data`` is or wraps)."""
    candidates: list[object] = [data]
    if loader is not None:
        batch_sampler = loader.batch_sampler
        candidates += [
            loader.sampler,
            batch_sampler,
            getattr(batch_sampler, "sampler", None),
            loader.dataset,
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
      samples are never loaded, and the epoch's order is the uninterrupted one, a
      ``shuffle=True`` loader's included (the state dict carries the states of the
      generators it draws from; torch's global generator is left as you restore it). A
      DataLoader subclass or wrapper keeps its own iteration, with the same order: it
      resumes through its own ``iter_from(start)`` when it has one, else it is read and
      the skipped batches dropped. A DataLoader over an IterableDataset is read and the
      skipped batches dropped; a torchdata ``StatefulDataLoader`` over one resumes from
      its own state, carried in the state dict;
    - over a one-shot iterator, is one-shot itself (the loop's rule for streams holds);
    - with a CUDA ``device``, copies each batch (tensors nested in tuples, lists, dicts,
      namedtuples and dataclasses) ``prefetch`` batches ahead, non-blocking from pinned
      memory on a side stream; the stream of the code that uses a batch waits for its
      copies. With ``device`` None or CPU, batches pass through untouched. Other
      devices get a plain ``.to(device)`` as each batch is asked for.

    A wrapper around a DataLoader (Lightning Fabric's ``setup_dataloaders``, Accelerate's
    ``prepare``) gets the same: ``set_epoch`` reaches the wrapped loader's samplers, and
    Fabric's wrapper, which sets its sampler's epoch to the number of times it was
    iterated, is told the loop's epoch, so that a resumed run shuffles as the
    uninterrupted one did.

    ``len`` is the loader's; errors raised by the loader reach the loop unchanged.

    Args:
        dataloader: A ``torch.utils.data.DataLoader``, or any re-iterable of batches.
        device: Where batches go: None (default) or ``"cpu"`` to leave them as they are,
            ``"cuda"``, ``"cuda:1"``, a device index or a ``torch.device``.
        prefetch: How many batches are copied ahead of the one in use (an int >= 1);
            each costs the device memory of one batch.

    Raises:
        TypeError, ValueError: For a ``dataloader`` that is not iterable, is text or
            bytes (a str, bytes, bytearray or memoryview) or a mapping (whose iteration
            gives its keys), a ``prefetch`` that is not an int >= 1, or a ``device``
            torch cannot parse or this machine does not have (such as ``"cuda"`` without
            CUDA, or ``"mps"``).

    Warns:
        dloop.LoopWarning: At ``prepare``, when persistent workers must restart every epoch
            (a dataset with ``set_epoch``); at ``state_dict()``, for a sampler whose order
            a resume cannot reproduce; when a resume inside a shuffled epoch starts from a
            state dict with no record of its order (saved by a Loop without ``prepare``);
            at ``load_state_dict``, for a state dict saved by another process (rank or
            world size) under torch.distributed: the data's part of a state dict is
            each process's own, so save one per process and load each its own.
    """
    if isinstance(dataloader, Iterator):
        return _OneShotPreparedData(dataloader, device=device, prefetch=prefetch)
    return PreparedData(dataloader, device=device, prefetch=prefetch)
