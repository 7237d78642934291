"""The CUDA prefetch's logic on the CPU: errors in order, and waits across devices.

torch's CUDA calls are replaced by recording doubles, so that the order of copies, waits
and events can be checked without a GPU; ``test_torch_prefetch_gpu.py`` runs the same
paths on a real device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from dloop_torch import _device


def test_an_error_from_a_copy_ahead_comes_after_the_batches_copied_before_it() -> None:
    error = RuntimeError("CUDA out of memory")

    def start(batch: int) -> int:
        if batch == 3:
            raise error
        return batch * 10

    batches = _device.copied_ahead(iter(range(6)), prefetch=2, start=start, finish=lambda b: b)
    got = [next(batches) for _ in range(3)]

    with pytest.raises(RuntimeError, match="CUDA out of memory") as raised:
        next(batches)

    assert raised.value is error
    assert got == [0, 10, 20]


def test_no_batch_is_read_past_a_failed_copy() -> None:
    read = []

    def source() -> Iterator[int]:
        for batch in range(10):
            read.append(batch)
            yield batch

    def start(batch: int) -> int:
        if batch == 1:
            raise MemoryError
        return batch

    with pytest.raises(MemoryError):
        list(_device.copied_ahead(source(), prefetch=4, start=start, finish=lambda b: b))

    assert read == [0, 1]


def test_prefetch_to_cuda_hands_over_the_copies_made_before_a_failed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = RuntimeError("CUDA out of memory")

    def copy(batch: int, device: Any, stream: Any) -> tuple[int, None, list[Any]]:
        if batch == 2:
            raise error
        return batch, None, []

    monkeypatch.setattr(_device, "_copy", copy)
    monkeypatch.setattr(_device, "_hand_over", lambda pending, device: pending[0])
    batches = _device.prefetch_to_cuda(
        iter(range(5)),
        device=torch.device("cuda"),
        prefetch=2,
        copy_stream=None,  # type: ignore[arg-type]
    )
    got = [next(batches), next(batches)]

    with pytest.raises(RuntimeError) as raised:
        next(batches)

    assert raised.value is error
    assert got == [0, 1]


class Log:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []


class FakeStream:
    def __init__(self, name: str, log: Log) -> None:
        self.name = name
        self.log = log

    def wait_stream(self, other: FakeStream) -> None:
        self.log.calls.append(("wait_stream", self.name, other.name))

    def wait_event(self, event: FakeEvent) -> None:
        self.log.calls.append(("wait_event", self.name, event.name))


class FakeEvent:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.name = "ready"

    def record(self, stream: FakeStream) -> None:
        self.log.calls.append(("record", self.name, stream.name))


class OnGpu(torch.Tensor):
    """A CPU tensor that says it lives on ``cuda:<index>``; ``to`` records the copy."""

    calls: Log
    gpu: int

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", self.gpu)

    def to(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.calls.append(("copy", f"cuda:{self.gpu}"))
        return torch.zeros(1)


def on_gpu(index: int, log: Log) -> OnGpu:
    tensor = torch.Tensor._make_subclass(OnGpu, torch.zeros(1))
    tensor.calls = log
    tensor.gpu = index
    return tensor


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Log:
    log = Log()
    streams: dict[str, FakeStream] = {}

    def current_stream(device: torch.device) -> FakeStream:
        name = f"current:{device}"
        return streams.setdefault(name, FakeStream(name, log))

    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Event", lambda: FakeEvent(log))
    return log


def test_a_tensor_from_another_gpu_is_copied_after_its_stream_and_holds_it_until_done(
    fake_cuda: Log,
) -> None:
    copy_stream = FakeStream("copy", fake_cuda)
    batch = {"a": on_gpu(1, fake_cuda), "b": on_gpu(1, fake_cuda)}

    _device._copy(batch, torch.device("cuda", 0), copy_stream)  # type: ignore[arg-type]

    assert fake_cuda.calls == [
        ("wait_stream", "copy", "current:cuda:1"),  # once for the device, before any copy
        ("copy", "cuda:1"),
        ("copy", "cuda:1"),
        ("record", "ready", "copy"),
        ("wait_event", "current:cuda:1", "ready"),  # its memory waits for the copy
    ]


def test_a_tensor_already_on_the_target_device_is_neither_copied_nor_waited_for(
    fake_cuda: Log,
) -> None:
    copy_stream = FakeStream("copy", fake_cuda)
    here = on_gpu(0, fake_cuda)

    moved, _, copied = _device._copy([here], torch.device("cuda", 0), copy_stream)  # type: ignore[arg-type]

    assert moved[0] is here
    assert copied == []
    assert fake_cuda.calls == [("record", "ready", "copy")]
