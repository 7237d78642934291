"""``prepare(..., device="cuda")``: batches copied ahead on a side stream, synchronised.

Every test here needs a CUDA device and is skipped without one. The synchronisation
tests keep the consumer's stream busy (``torch.cuda._sleep``) or read at once, so that a
missing ``wait_event``/``wait_stream`` or ``record_stream`` shows up as wrong values.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dloop import Loop
from dloop_torch import prepare

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


class Pair(NamedTuple):
    inputs: torch.Tensor
    targets: torch.Tensor


def nested_collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    x = torch.stack([sample[0] for sample in samples])
    y = torch.stack([sample[1] for sample in samples])
    return {"pair": Pair(x, y), "list": [x, (y, "label"), 3], "size": len(samples)}


def seconds_of(work: Callable[[], object]) -> float:
    """GPU time from before to after the work ``work`` queues on the current stream."""
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record()
    work()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / 1000.0


def busy_wait(cycles: int) -> None:
    """Keep the current stream busy for about ``cycles`` GPU clock cycles."""
    torch.cuda._sleep(cycles)  # type: ignore[no-untyped-call]


def sleep_cycles_per_second() -> float:
    seconds_of(lambda: busy_wait(1_000_000))  # warm-up
    return 50_000_000 / seconds_of(lambda: busy_wait(50_000_000))


class CountingBatches:
    """``count`` pinned host batches, batch i filled with i; ``read`` counts those read."""

    def __init__(self, count: int, size: int) -> None:
        self.batches = [torch.full((size,), float(i)).pin_memory() for i in range(count)]
        self.read = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.batches:
            self.read += 1
            yield batch


@pytest.mark.parametrize("pin_memory", [False, True])
def test_batches_arrive_on_the_device_with_their_structure_and_values(pin_memory: bool) -> None:
    dataset = TensorDataset(torch.randn(20, 3), torch.randn(20))
    loader = DataLoader(dataset, batch_size=4, collate_fn=nested_collate, pin_memory=pin_memory)
    expected = list(loader)
    device = torch.device("cuda", torch.cuda.current_device())

    got = [batch for batch, _ in Loop(prepare(loader, device="cuda"), max_epochs=1)]

    assert len(got) == len(expected) == 5
    for batch, reference in zip(got, expected, strict=True):
        assert type(batch["pair"]) is Pair
        for moved, original in [
            (batch["pair"].inputs, reference["pair"].inputs),
            (batch["pair"].targets, reference["pair"].targets),
            (batch["list"][0], reference["list"][0]),
            (batch["list"][1][0], reference["list"][1][0]),
        ]:
            assert moved.device == device
            assert torch.equal(moved.cpu(), original)
        assert batch["list"][1][1] == "label"
        assert batch["list"][2] == 3
        assert batch["size"] == 4


def test_copies_are_queued_prefetch_batches_ahead() -> None:
    source = CountingBatches(8, size=1024)
    batches = iter(prepare(source, device="cuda", prefetch=3))

    first = next(batches)
    assert source.read == 4  # the batch in hand and three in flight
    second = next(batches)
    assert source.read == 5
    assert first.min().item() == first.max().item() == 0.0
    assert second.min().item() == second.max().item() == 1.0


@pytest.mark.parametrize("consumer_is_busy", [False, True], ids=["reads-at-once", "reads-late"])
def test_the_consumer_sees_each_batch_complete_and_never_overwritten(
    consumer_is_busy: bool,
) -> None:
    """Read at once: only the wait for the copy makes the values right. Read late, with
    the batch dropped at once: only ``record_stream`` keeps a later copy out of its memory."""
    count = 12
    source = CountingBatches(count, size=8 * 2**20)  # 32 MiB each: copies take a while
    delay = int(0.02 * sleep_cycles_per_second())
    consumer = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    extremes = []

    with torch.cuda.stream(consumer):
        for batch in prepare(source, device="cuda", prefetch=2):
            if consumer_is_busy:
                busy_wait(delay)
            extremes.append(torch.stack([batch.min(), batch.max()]))
            del batch
    torch.cuda.synchronize()

    assert [pair.tolist() for pair in extremes] == [[float(i), float(i)] for i in range(count)]


def test_copies_overlap_the_work_of_the_consumer() -> None:
    count = 16
    source = CountingBatches(count, size=16 * 2**20)  # 64 MiB each
    copy_seconds = min(seconds_of(lambda: source.batches[0].to("cuda")) for _ in range(3))
    busy = int(count * copy_seconds * sleep_cycles_per_second())

    def naive() -> None:
        busy_wait(busy)
        for batch in source:
            batch.to("cuda", non_blocking=True)

    def prepared() -> None:
        busy_wait(busy)
        for _ in prepare(source, device="cuda", prefetch=2):
            pass

    for _ in range(2):  # the second round runs with a warm caching allocator
        naive_seconds = seconds_of(naive)
        prepared_seconds = seconds_of(prepared)

    # Serial: busy time + copy time (about twice the busy time); overlapped: about once.
    assert prepared_seconds < 0.75 * naive_seconds, (prepared_seconds, naive_seconds)


def test_an_error_from_the_data_comes_after_the_batches_before_it() -> None:
    error = OSError("disk gone")

    def batches() -> Iterator[torch.Tensor]:
        for i in range(3):
            yield torch.full((4,), float(i))
        raise error

    class Source:
        def __iter__(self) -> Iterator[torch.Tensor]:
            return batches()

    got = []
    iterator = iter(prepare(Source(), device="cuda", prefetch=2))
    for _ in range(3):
        got.append(next(iterator).cpu().tolist())
    with pytest.raises(OSError, match="disk gone") as raised:
        next(iterator)

    assert raised.value is error
    assert got == [[0.0] * 4, [1.0] * 4, [2.0] * 4]


def test_a_resumed_epoch_is_copied_to_the_device_too() -> None:
    loader = DataLoader(TensorDataset(torch.arange(20)), batch_size=4)
    prepared = prepare(loader, device="cuda")

    rest = [ids.cpu().tolist() for (ids,) in prepared.iter_from(3)]

    assert rest == [[12, 13, 14, 15], [16, 17, 18, 19]]


def test_with_nccl_the_agreement_tensor_is_on_the_current_cuda_device() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = f"""
import torch, torch.distributed as dist
from dloop_torch import DistributedSync
torch.cuda.set_device(0)
dist.init_process_group("nccl", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
devices = []
all_reduce = dist.all_reduce
def spy(tensor, *args, **kwargs):
    devices.append(str(tensor.device))
    return all_reduce(tensor, *args, **kwargs)
dist.all_reduce = spy
print(DistributedSync(every_n_steps=1).combine([1, 2**40, 3]), devices)
dist.destroy_process_group()
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 1099511627776, 3) ['cuda:0']"


def test_a_copy_that_fails_ahead_comes_after_the_batches_copied_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dloop_torch import _device

    real_copy = _device._copy
    error = torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    def copy(batch: torch.Tensor, device: torch.device, stream: Any) -> Any:
        if int(batch[0]) == 3:
            raise error
        return real_copy(batch, device, stream)

    monkeypatch.setattr(_device, "_copy", copy)
    batches = iter(prepare(CountingBatches(6, size=4), device="cuda", prefetch=2))
    got = [next(batches).cpu().tolist() for _ in range(3)]

    with pytest.raises(torch.cuda.OutOfMemoryError) as raised:
        next(batches)

    assert raised.value is error
    assert got == [[0.0] * 4, [1.0] * 4, [2.0] * 4]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_tensor_made_on_another_gpu_is_copied_once_its_stream_has_written_it() -> None:
    delay = int(0.05 * sleep_cycles_per_second())

    def batches() -> Iterator[torch.Tensor]:
        for value in range(4):
            with torch.cuda.device(1):
                busy_wait(delay)  # the producing stream is still busy when the batch is given
                yield torch.full((2**20,), float(value), device="cuda:1")

    got = [batch.min().item() for batch in prepare(batches(), device="cuda:0", prefetch=2)]

    assert got == [0.0, 1.0, 2.0, 3.0]


def test_a_prepared_stream_on_cuda_reads_prefetch_batches_ahead() -> None:
    """Prefetching reads ahead of the loop, also over a one-shot stream (documented)."""
    source = CountingBatches(10, size=4)
    stream = iter(source)

    loop = Loop(prepare(stream, device="cuda", prefetch=2), max_steps=2)
    assert len([batch for batch, _ in loop]) == 2

    assert source.read == 4  # 2 yielded, 2 in flight
