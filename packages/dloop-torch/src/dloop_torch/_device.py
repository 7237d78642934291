"""Batches onto a device: ahead of use on a side CUDA stream, or plainly elsewhere."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

import torch

from dloop_torch._structure import map_tensors

T = TypeVar("T")
P = TypeVar("P")


def as_device(device: object) -> torch.device | None:
    """Validate ``prepare``'s ``device``: None, or a ``torch.device`` that can be used here.

    Raises:
        TypeError: Not None, a str, an int or a ``torch.device``.
        ValueError: A name torch does not parse, or a CUDA device this machine lacks.
    """
    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(
            "device must be None, a str such as 'cuda' or 'cuda:1', an int or a "
            f"torch.device, got {device!r} (a {type(device).__name__})"
        )
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"device must name a torch device such as 'cpu', 'cuda' or 'cuda:1', got "
            f"{device!r} ({error})"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} needs CUDA, but torch.cuda.is_available() is False; "
                "use device=None (or 'cpu') to keep batches where the DataLoader puts them"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device={device!r} does not exist: this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    elif parsed.type not in ("cpu", "meta"):
        try:
            # A zero-size tensor is the one test every backend answers (mps, xpu, ...).
            torch.empty(0, device=parsed)
        except Exception as error:  # torch raises several kinds for a missing backend
            raise ValueError(
                f"device={device!r} is not available on this machine ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); use device=None (or "
                "'cpu') to keep batches where the DataLoader puts them"
            ) from None
    return parsed


def to_device(batches: Iterator[T], device: torch.device) -> Generator[T, None, None]:
    """Move each batch to ``device`` when it is asked for (devices other than CUDA)."""
    for batch in batches:
        yield map_tensors(batch, lambda tensor: tensor.to(device))


def prefetch_to_cuda(
    batches: Iterator[T],
    *,
    device: torch.device,
    prefetch: int,
    copy_stream: torch.cuda.Stream,
) -> Generator[T, None, None]:
    """Yield the batches of ``batches`` on ``device``, copied ``prefetch`` batches ahead.

    Copies run on ``copy_stream``, non-blocking from pinned host memory (tensors that are
    not pinned are pinned first). A tensor on another CUDA device is copied after the
    work queued on that device's current stream (which may still be writing it), and
    that stream waits for the copy before it can reuse the memory. Before a batch is
    yielded, the consumer's stream (the current stream of ``device`` at that moment)
    waits for that batch's copies, and each copied tensor is recorded on the consumer's
    stream so that the caching allocator does not hand its memory to a later copy while
    the consumer still uses it.

    An error raised by ``batches``, or while copying a batch ahead (CUDA out of memory),
    is re-raised, the same object, after the batches before it have been yielded, as the
    plain iteration would.
    """
    return copied_ahead(
        batches,
        prefetch=prefetch,
        start=lambda batch: _copy(batch, device, copy_stream),
        finish=lambda pending: _hand_over(pending, device),
    )


def copied_ahead(
    batches: Iterator[T],
    *,
    prefetch: int,
    start: Callable[[T], P],
    finish: Callable[[P], T],
) -> Generator[T, None, None]:
    """Yield ``finish(start(batch))`` for each batch, ``start`` running ``prefetch``
    batches ahead of the one yielded.

    An error from ``batches`` or from ``start`` ends the reading; it is raised, the same
    object, once the batches started before it have been yielded.
    """
    pending: deque[P] = deque()
    error: Exception | None = None
    exhausted = False
    while True:
        # Keep `prefetch` batches in flight beyond the one about to be yielded.
        while not exhausted and len(pending) <= prefetch:
            try:
                batch = next(batches)
            except StopIteration:
                exhausted = True
                break
            except Exception as raised:  # re-raised below, in order
                error = raised
                exhausted = True
                break
            try:
                pending.append(start(batch))
            except Exception as raised:  # a failed copy, in order too
                error = raised
                exhausted = True
            del batch
        if not pending:
            break
        yield finish(pending.popleft())
    if error is not None:
        try:
            raise error
        finally:
            error = None  # no reference cycle through the traceback


def _hand_over(pending: tuple[T, torch.cuda.Event, list[torch.Tensor]], device: torch.device) -> T:
    """The moved batch, once the consumer's stream waits for its copies."""
    moved, ready, copied = pending
    consumer = torch.cuda.current_stream(device)
    # Waiting on the event recorded right after this batch's copies is what
    # consumer.wait_stream(copy_stream) would be at that moment; waiting on the stream
    # now would also wait for the copies of the batches queued behind this one.
    consumer.wait_event(ready)
    for tensor in copied:
        tensor.record_stream(consumer)
    return moved


def _copy(
    batch: T, device: torch.device, copy_stream: torch.cuda.Stream
) -> tuple[T, torch.cuda.Event, list[torch.Tensor]]:
    """Queue the copies of ``batch`` on ``copy_stream``; return the moved batch, the event
    that marks the end of its copies, and the new device tensors."""
    copied: list[torch.Tensor] = []
    producers: list[torch.cuda.Stream] = []

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device == device:
            return tensor
        if tensor.device.type == "cuda":
            # Made on another GPU: its stream may still be writing it.
            producer = torch.cuda.current_stream(tensor.device)
            if not any(producer == known for known in producers):
                copy_stream.wait_stream(producer)
                producers.append(producer)
        elif tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        moved = tensor.to(device, non_blocking=True)
        copied.append(moved)
        return moved

    with torch.cuda.stream(copy_stream):
        moved_batch = map_tensors(batch, copy)
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        ready.record(copy_stream)
    for producer in producers:
        # The source's memory is not reused on its device before the copy has read it.
        producer.wait_event(ready)
    return moved_batch, ready, copied
