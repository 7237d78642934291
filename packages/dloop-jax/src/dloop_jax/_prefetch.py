"""``prefetch_to_device``: put host batches on the devices before the step that uses them."""

from __future__ import annotations

import collections
import itertools
import reprlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax

from dloop._validation import as_count

Put = Callable[[Any], Any]


def prefetch_to_device(
    data: Iterable[Any], size: int = 2, sharding: jax.sharding.Sharding | None = None
) -> DevicePrefetch:
    """Wrap ``data`` so that its batches reach ``Loop`` already on the devices.

    Each batch, a pytree of host arrays (numpy arrays, nested in tuples, lists, dicts,
    ...), is handed to ``jax.device_put`` ``size`` batches ahead: when the loop takes
    batch ``i``, batches ``i + 1`` to ``i + size`` have been put too. The transfers are
    dispatched asynchronously and overlap with the jitted steps still running. With a
    ``sharding``, every array of the batch is laid out by it (for data parallelism,
    ``NamedSharding(mesh, PartitionSpec("data"))``). When the sharding spans devices of
    several processes (a multi-process run), each process passes its own slice of the
    global batch and ``jax.make_array_from_process_local_data`` assembles the global
    array: its leading dimension is the sum over processes.

    The result passes ``len(data)`` and ``set_epoch(epoch)`` through to ``data``; its
    ``iter_from(start)`` uses ``data.iter_from`` when there is one, else it discards
    ``start`` host batches before any transfer. Each ``iter()`` starts a fresh pass over
    ``data``; a one-shot iterator gives a one-shot iterator, for one pass (read up to
    ``size`` batches past the last one the loop takes). An error raised by ``data`` (or
    by the transfer) reaches the loop unchanged, after the batches before it, as it
    would without prefetching.

    Args:
        data: Batches: any re-iterable (a list, a ``tf.data`` or ``grain`` dataset, a
            torch ``DataLoader`` with numpy collation, ...) or a one-shot iterator.
        size: How many batches are put on the devices ahead of the one in use (an int
            >= 1); 1 already overlaps the next transfer with the current step, 2 also
            absorbs an uneven host loader.
        sharding: A ``jax.sharding.Sharding`` for every array of a batch, or None for
            the default device.

    Raises:
        TypeError, ValueError: At once, for data that is not iterable, is text or bytes
            (a str, bytes, bytearray or memoryview) or a mapping (whose iteration gives
            its keys), a ``size`` that is not an int >= 1, or a ``sharding`` that is not
            a ``jax.sharding.Sharding``.
    """
    if isinstance(data, Iterator):
        return _OneShotDevicePrefetch(data, size=size, sharding=sharding)
    return DevicePrefetch(data, size=size, sharding=sharding)


class DevicePrefetch:
    """Batches of ``data`` put on the devices ahead of use; see ``prefetch_to_device``.

    It pickles when its data does and it has no sharding (JAX does not pickle devices).
    """

    __slots__ = ("_data", "_put", "_sharding", "_size")

    def __init__(
        self, data: Iterable[Any], *, size: int, sharding: jax.sharding.Sharding | None
    ) -> None:
        if not (hasattr(type(data), "__iter__") or hasattr(type(data), "__getitem__")):
            raise TypeError(f"data must be iterable, got {data!r} (a {type(data).__name__})")
        if isinstance(data, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                f"data must be an iterable of batches (pytrees of host arrays), not a "
                f"{type(data).__name__}: got {reprlib.repr(data)}"
            )
        if isinstance(data, Mapping):
            raise TypeError(
                f"data must be an iterable of batches (pytrees of host arrays), not a "
                f"mapping: iterating a {type(data).__name__} gives its keys, got "
                f"{reprlib.repr(data)}. For one batch that is a dict, pass [batch]; for "
                "batches stored as its values, pass list(data.values())"
            )
        self._data = data
        self._size = as_count("size", size)
        self._sharding = _as_sharding(sharding)
        self._put = _transfer_for(self._sharding)

    @property
    def data(self) -> Iterable[Any]:
        """The wrapped host data."""
        return self._data

    @property
    def size(self) -> int:
        """How many batches are put on the devices ahead of use."""
        return self._size

    @property
    def sharding(self) -> jax.sharding.Sharding | None:
        """The sharding of every array of a batch, or None for the default device."""
        return self._sharding

    def __iter__(self) -> Iterator[Any]:
        """A fresh pass over ``data``, its batches on the devices."""
        return _prefetched(iter(self._data), self._size, self._put)

    def __len__(self) -> int:
        """``len(data)``; a ``TypeError`` when ``data`` has none (the loop then looks
        one batch ahead to find the end of an epoch)."""
        return len(self._data)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Call ``data.set_epoch(epoch)`` when ``data`` has it; otherwise do nothing."""
        set_epoch = getattr(self._data, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def iter_from(self, start: int) -> Iterator[Any]:
        """A pass over ``data`` from its batch ``start``, on the devices.

        Uses ``data.iter_from(start)`` when ``data`` has it; otherwise it skips ``start``
        host batches, which are never transferred. ``data`` without a length (``len``
        raises TypeError) may have fewer than ``start`` batches in this pass, as a
        process whose epoch ended before the resumed step under ``uneven="longest"``
        does: the pass then yields nothing, and the loop finds the epoch ended there.

        Raises:
            ValueError: When ``data`` has a length and the pass ends before batch
                ``start`` (raised when iterated).
        """
        start = as_count("start", start, minimum=0)
        iter_from = getattr(self._data, "iter_from", None)
        if callable(iter_from):
            batches: Iterator[Any] = iter(iter_from(start))
        else:
            batches = _skipped(iter(self._data), start, strict=_has_length(self._data))
        return _prefetched(batches, self._size, self._put)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({reprlib.repr(self._data)}, size={self._size}, "
            f"sharding={self._sharding!r})"
        )


class _OneShotDevicePrefetch(DevicePrefetch):
    """The wrapper of a one-shot iterator is a one-shot iterator itself, so that ``Loop``
    treats it as one (a single pass; a clear error for ``max_epochs > 1``)."""

    __slots__ = ("_pass",)

    def __init__(
        self, data: Iterator[Any], *, size: int, sharding: jax.sharding.Sharding | None
    ) -> None:
        super().__init__(data, size=size, sharding=sharding)
        self._pass: Iterator[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._pass is None:
            self._pass = super().__iter__()
        return next(self._pass)

    def iter_from(self, start: int) -> Iterator[Any]:
        """The stream after its next ``start`` batches, which are read but never
        transferred; nothing more when it has no more than ``start`` left."""
        self._pass = super().iter_from(start)
        return self


def _prefetched(batches: Iterator[Any], size: int, put: Put) -> Iterator[Any]:
    """Yield ``put(batch)`` for each batch, with ``size`` more batches put in advance.

    An exception from ``batches`` or ``put`` is held back until the batches put before it
    have been yielded, then raised as it is.
    """
    queue: collections.deque[Any] = collections.deque()
    failure: Exception | None = None
    exhausted = False
    while True:
        while not exhausted and failure is None and len(queue) <= size:
            try:
                batch = next(batches)
            except StopIteration:
                exhausted = True
                break
            except Exception as error:  # data errors reach the loop in order, unchanged
                failure = error
                break
            try:
                queue.append(put(batch))
            except Exception as error:
                failure = error
        if queue:
            yield queue.popleft()
        elif failure is not None:
            try:
                raise failure
            finally:
                failure = None  # no reference cycle through the traceback
        else:
            return


def _has_length(data: object) -> bool:
    """Whether ``len(data)`` gives a length (it raises TypeError for data without one)."""
    try:
        len(data)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def _skipped(batches: Iterator[Any], start: int, *, strict: bool) -> Iterator[Any]:
    """``batches`` without its first ``start`` items, which are read but not kept; when
    there are fewer, an error if ``strict`` (data with a length), else nothing."""
    skipped = sum(1 for _ in itertools.islice(batches, start))
    if strict and skipped < start:
        raise ValueError(
            f"iter_from({start}): data yielded only {skipped} batches in this pass, "
            f"so there is no batch {start} to start from"
        )
    yield from batches


def _transfer_for(sharding: jax.sharding.Sharding | None) -> Put:
    """The function that puts one host batch (a pytree) on the devices: an object of a
    module-level class, so that a ``DevicePrefetch`` can be pickled."""
    if sharding is None or sharding.is_fully_addressable:
        return _DevicePut(sharding)
    return _AssembleGlobal(sharding)


class _DevicePut:
    """``jax.device_put(batch)``, with the sharding when there is one."""

    __slots__ = ("sharding",)

    def __init__(self, sharding: jax.sharding.Sharding | None) -> None:
        self.sharding = sharding

    def __call__(self, batch: Any) -> Any:
        if self.sharding is None:
            return jax.device_put(batch)
        return jax.device_put(batch, self.sharding)


class _AssembleGlobal:
    """Each process's local part of the batch, assembled into global arrays laid out by
    a sharding that spans the devices of several processes."""

    __slots__ = ("sharding",)

    def __init__(self, sharding: jax.sharding.Sharding) -> None:
        self.sharding = sharding

    def __call__(self, batch: Any) -> Any:
        # A typed name for a function JAX leaves unannotated.
        make_global: Callable[[jax.sharding.Sharding, Any], jax.Array] = (
            jax.make_array_from_process_local_data
        )
        sharding = self.sharding
        return jax.tree.map(lambda local: make_global(sharding, local), batch)


def _as_sharding(sharding: object) -> jax.sharding.Sharding | None:
    if sharding is None or isinstance(sharding, jax.sharding.Sharding):
        return sharding
    hint = ""
    if isinstance(sharding, jax.Device):
        hint = "; for one device, pass jax.sharding.SingleDeviceSharding(device)"
    raise TypeError(
        "sharding must be a jax.sharding.Sharding (a NamedSharding, ...) or None, got "
        f"{sharding!r} (a {type(sharding).__name__}){hint}"
    )
