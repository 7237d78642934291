"""``prefetch_to_device`` on one device: the same batches, on the device, ahead of use, and
the data protocol (``len``, ``set_epoch``, ``iter_from``, errors) kept intact."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import jax
import numpy as np
import pytest

from dloop import Event, Loop, LoopEvents
from dloop_jax import DevicePrefetch, prefetch_to_device

Batch = dict[str, Any]


def host_batches(count: int) -> list[Batch]:
    """Pytrees of numpy arrays: a dict holding an array and a tuple of two arrays."""
    rng = np.random.default_rng(count)
    return [
        {
            "x": rng.normal(size=(4, 3)).astype(np.float32),
            "pair": (np.full(4, i, dtype=np.int32), rng.uniform(size=2).astype(np.float32)),
        }
        for i in range(count)
    ]


def assert_same_batch(device_batch: Any, host_batch: Any) -> None:
    assert str(jax.tree.structure(device_batch)) == str(jax.tree.structure(host_batch))
    for got, expected in zip(
        jax.tree.leaves(device_batch), jax.tree.leaves(host_batch), strict=True
    ):
        assert isinstance(got, jax.Array)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(np.asarray(got), expected)


class Transfers:
    """Counts the host batches handed to ``jax.device_put``, by the value of ``pair[0]``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.indices: list[int] = []
        real: Callable[..., Any] = jax.device_put

        def counting_put(batch: Any, *args: Any, **kwargs: Any) -> Any:
            self.indices.append(int(batch["pair"][0][0]))
            return real(batch, *args, **kwargs)

        monkeypatch.setattr(jax, "device_put", counting_put)


class Epochs:
    """Re-iterable data with ``len`` and ``set_epoch``: epoch e yields batches rotated by e."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.epoch = 0
        self.epochs_set: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_set.append(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        shift = self.epoch % len(self.batches)
        return iter(self.batches[shift:] + self.batches[:shift])


class Unsized:
    """Re-iterable data without a length."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)


class WithIterFrom(Unsized):
    """Data that positions itself: ``iter_from(start)`` is recorded and honoured."""

    def __init__(self, batches: list[Batch]) -> None:
        super().__init__(batches)
        self.starts: list[int] = []

    def iter_from(self, start: int) -> Iterator[Batch]:
        self.starts.append(start)
        return iter(self.batches[start:])


@pytest.mark.parametrize("size", [1, 2, 5])
def test_prefetched_batches_equal_the_host_batches(size: int) -> None:
    batches = host_batches(4)
    prefetched = list(prefetch_to_device(batches, size=size))
    assert len(prefetched) == len(batches)
    for device_batch, host_batch in zip(prefetched, batches, strict=True):
        assert_same_batch(device_batch, host_batch)


def test_batches_are_on_the_default_device() -> None:
    (batch,) = prefetch_to_device(host_batches(1))
    for leaf in jax.tree.leaves(batch):
        assert leaf.devices() == {jax.devices()[0]}


def test_a_given_sharding_lays_out_every_array() -> None:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[-1])
    for batch in prefetch_to_device(host_batches(2), sharding=sharding):
        for leaf in jax.tree.leaves(batch):
            assert leaf.sharding == sharding


@pytest.mark.parametrize("size", [1, 3])
def test_batches_are_put_size_batches_ahead(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    transfers = Transfers(monkeypatch)
    count = 6
    for taken, batch in enumerate(prefetch_to_device(host_batches(count), size=size)):
        assert int(batch["pair"][0][0]) == taken
        # Taking batch i, batches i + 1 .. i + size are already on their way.
        assert transfers.indices == list(range(min(taken + size + 1, count)))


def test_loop_over_prefetched_data_yields_the_host_batches_and_events() -> None:
    batches = host_batches(5)
    events = {"Every2": Event(every_n_steps=2), "At7": Event(at_step=7)}
    host_run = list(Loop(batches, max_epochs=3, events=events))
    device_run = list(Loop(prefetch_to_device(batches), max_epochs=3, events=events))
    assert [fired for _, fired in device_run] == [fired for _, fired in host_run]
    for (device_batch, _), (host_batch, _) in zip(device_run, host_run, strict=True):
        assert_same_batch(device_batch, host_batch)


def test_len_is_the_length_of_the_data() -> None:
    assert len(prefetch_to_device(host_batches(7))) == 7


def test_data_without_len_has_no_len_and_the_loop_finds_the_epoch_ends() -> None:
    prefetched = prefetch_to_device(Unsized(host_batches(3)))
    with pytest.raises(TypeError):
        len(prefetched)
    run = list(Loop(prefetched, max_epochs=2))
    assert len(run) == 6


def test_set_epoch_reaches_the_data_before_every_pass() -> None:
    data = Epochs(host_batches(3))
    run = list(Loop(prefetch_to_device(data), max_epochs=3))
    assert data.epochs_set == [0, 1, 2]
    assert [int(batch["pair"][0][0]) for batch, _ in run] == [0, 1, 2, 1, 2, 0, 2, 0, 1]


def test_set_epoch_is_a_no_op_for_data_without_it() -> None:
    batches = host_batches(2)
    prefetched = prefetch_to_device(batches)
    prefetched.set_epoch(3)
    assert len(list(prefetched)) == 2


def test_iter_from_uses_the_data_own_iter_from() -> None:
    data = WithIterFrom(host_batches(5))
    resumed = list(prefetch_to_device(data).iter_from(3))
    assert data.starts == [3]
    assert [int(batch["pair"][0][0]) for batch in resumed] == [3, 4]


def test_iter_from_skips_host_batches_without_transferring_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transfers = Transfers(monkeypatch)
    batches = host_batches(6)
    resumed = list(prefetch_to_device(batches, size=2).iter_from(4))
    assert transfers.indices == [4, 5]
    for device_batch, host_batch in zip(resumed, batches[4:], strict=True):
        assert_same_batch(device_batch, host_batch)


def test_iter_from_past_the_end_of_the_data_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"iter_from\(5\).*only 3 batches"):
        next(prefetch_to_device(host_batches(3)).iter_from(5))


@pytest.mark.parametrize(
    ("kind", "start", "left"),
    [("unsized", 3, []), ("unsized", 5, []), ("unsized", 2, [2]), ("one-shot", 5, [])],
)
def test_iter_from_past_the_end_of_data_without_a_length_yields_what_is_left(
    kind: str, start: int, left: list[int]
) -> None:
    """A process whose epoch ended before the resumed step (in the padding of
    ``uneven="longest"``) gets an empty pass, not an error: the loop then pads."""
    batches = host_batches(3)
    data: Any = Unsized(batches) if kind == "unsized" else iter(batches)

    rest = list(prefetch_to_device(data).iter_from(start))

    assert [int(batch["pair"][0][0]) for batch in rest] == left


def test_a_resumed_loop_yields_the_batches_of_an_uninterrupted_run() -> None:
    data = Epochs(host_batches(5))
    events = {"Every3": Event(every_n_steps=3)}
    uninterrupted = list(Loop(prefetch_to_device(data), max_epochs=3, events=events))
    first = Loop(prefetch_to_device(data), max_epochs=3, events=events)
    for _ in first:
        if first.state.step == 7:  # epoch 1, batch 2
            saved = first.state_dict()
            break
    resumed = Loop(prefetch_to_device(data), max_epochs=3, events=events)
    resumed.load_state_dict(saved)
    rest = list(resumed)
    assert [fired for _, fired in rest] == [fired for _, fired in uninterrupted[8:]]
    for (device_batch, _), (expected, _) in zip(rest, uninterrupted[8:], strict=True):
        assert_same_batch(device_batch, jax.tree.map(np.asarray, expected))


def test_each_iteration_is_a_fresh_pass_over_the_data() -> None:
    batches = host_batches(3)
    prefetched = prefetch_to_device(batches)
    first_pass = iter(prefetched)
    next(first_pass)
    second_pass = list(prefetched)
    assert len(second_pass) == 3
    assert_same_batch(second_pass[0], batches[0])
    assert_same_batch(next(first_pass), batches[1])


def test_a_one_shot_iterator_stays_one_shot() -> None:
    prefetched = prefetch_to_device(iter(host_batches(4)))
    assert isinstance(prefetched, Iterator)
    assert iter(prefetched) is prefetched
    with pytest.raises(ValueError, match="one-shot iterator"):
        Loop(prefetched, max_epochs=2)
    taken = [batch for batch, _ in Loop(prefetched, max_steps=3)]
    assert [int(batch["pair"][0][0]) for batch in taken] == [0, 1, 2]


class Broken(Exception):
    """An error of the user's data."""


def test_a_data_error_reaches_the_loop_unchanged_after_the_batches_before_it() -> None:
    error = Broken("batch 3 is corrupt")

    def failing() -> Iterator[Batch]:
        yield from host_batches(3)
        raise error

    class Failing:
        def __len__(self) -> int:  # a known length: the loop does not look ahead
            return 5

        def __iter__(self) -> Iterator[Batch]:
            return failing()

    taken = []
    loop = iter(Loop(prefetch_to_device(Failing(), size=2), max_steps=10))
    for _ in range(3):
        batch, _ = next(loop)
        taken.append(int(batch["pair"][0][0]))
    with pytest.raises(Broken) as raised:
        next(loop)
    assert raised.value is error
    assert taken == [0, 1, 2]


def test_a_transfer_error_reaches_the_loop_after_the_batches_before_it() -> None:
    batches: list[Any] = [*host_batches(2), {"text": np.array(["not a number"])}]
    prefetched = iter(prefetch_to_device(batches, size=2))
    for host_batch in batches[:2]:
        assert_same_batch(next(prefetched), host_batch)
    with pytest.raises(TypeError, match="not a valid JAX array type"):
        next(prefetched)


@pytest.mark.parametrize("size", [0, -1])
def test_size_below_one_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match=rf"size must be an int >= 1.*, got {size}"):
        prefetch_to_device(host_batches(1), size=size)


@pytest.mark.parametrize("size", [True, 2.0, "2", None])
def test_size_that_is_not_an_int_is_refused(size: Any) -> None:
    with pytest.raises(TypeError, match=r"size must be an int >= 1.*, got .* \(a "):
        prefetch_to_device(host_batches(1), size=size)


@pytest.mark.parametrize("sharding", ["data", 0, jax.sharding.PartitionSpec("data")])  # type: ignore[no-untyped-call, unused-ignore]
def test_sharding_that_is_not_a_sharding_is_refused(sharding: Any) -> None:
    with pytest.raises(TypeError, match=r"sharding must be a jax.sharding.Sharding"):
        prefetch_to_device(host_batches(1), sharding=sharding)


def test_a_device_as_sharding_is_refused_with_a_hint() -> None:
    device: Any = jax.devices()[0]
    with pytest.raises(TypeError, match="SingleDeviceSharding"):
        prefetch_to_device(host_batches(1), sharding=device)


def test_data_that_is_not_iterable_is_refused() -> None:
    with pytest.raises(TypeError, match="data must be iterable, got 3"):
        prefetch_to_device(3)  # type: ignore[arg-type]


def test_the_wrapper_says_what_it_wraps() -> None:
    prefetched = prefetch_to_device(host_batches(1), size=3)
    assert isinstance(prefetched, DevicePrefetch)
    assert prefetched.size == 3
    assert prefetched.sharding is None
    assert "size=3" in repr(prefetched)


@pytest.mark.parametrize(
    "data",
    ["abc", b"abc", bytearray(b"abc"), memoryview(b"abc")],
    ids=["str", "bytes", "bytearray", "memoryview"],
)
def test_text_or_bytes_are_refused_as_data(data: Any) -> None:
    kind = type(data).__name__
    with pytest.raises(
        TypeError, match=rf"data must be an iterable of batches .*, not a {kind}: got "
    ):
        prefetch_to_device(data)


@pytest.mark.parametrize(
    "data",
    [{"x": np.ones(2)}, MappingProxyType({"x": np.ones(2)})],
    ids=["dict", "mappingproxy"],
)
def test_a_mapping_is_refused_as_data_since_iterating_it_gives_keys(data: Any) -> None:
    with pytest.raises(TypeError) as raised:
        prefetch_to_device(data)

    message = str(raised.value)
    assert message.startswith("data must be an iterable of batches")
    assert f"not a mapping: iterating a {type(data).__name__} gives its keys" in message
    assert "pass [batch]" in message


def test_a_list_of_dict_batches_is_still_taken() -> None:
    batches = [{"x": np.ones(2)}, {"x": np.zeros(2)}]

    got = [jax.device_get(batch["x"]).tolist() for batch in prefetch_to_device(batches)]

    assert got == [[1.0, 1.0], [0.0, 0.0]]


def test_a_prefetch_can_be_pickled_and_iterates_as_before() -> None:
    """(A sharding holds JAX devices, which JAX does not pickle.)"""
    batches = host_batches(3)

    copy = pickle.loads(pickle.dumps(prefetch_to_device(batches, size=2)))

    assert isinstance(copy, DevicePrefetch)
    assert copy.size == 2
    for device_batch, host_batch in zip(copy, batches, strict=True):
        assert_same_batch(device_batch, host_batch)


def test_the_host_batches_are_left_as_they_were() -> None:
    batches = host_batches(3)
    kept = [jax.tree.map(np.copy, batch) for batch in batches]

    moved = list(prefetch_to_device(batches))

    for host_batch, before, device_batch in zip(batches, kept, moved, strict=True):
        assert device_batch is not host_batch
        for leaf, expected in zip(
            jax.tree.leaves(host_batch), jax.tree.leaves(before), strict=True
        ):
            assert type(leaf) is np.ndarray
            np.testing.assert_array_equal(leaf, expected)


def test_over_a_one_shot_stream_the_run_ends_where_the_stream_does() -> None:
    """Rule 24 through the wrapper: the stream's end is the run's, with TRAINING_END."""
    stream = prefetch_to_device(iter(host_batches(3)), size=2)

    with pytest.warns(UserWarning, match="ended"):
        events = [fired for _, fired in Loop(stream, max_steps=10)]

    assert len(events) == 3
    assert LoopEvents.TRAINING_END in events[-1]


def test_over_a_one_shot_stream_prefetch_reads_size_batches_past_the_run() -> None:
    """Documented: prefetching reads ahead, so the stream gives up to ``size`` batches the
    loop never yields."""
    source = iter(host_batches(10))

    taken = [batch for batch, _ in Loop(prefetch_to_device(source, size=2), max_steps=3)]

    assert len(taken) == 3
    assert int(next(source)["pair"][0][0]) == 3 + 2
