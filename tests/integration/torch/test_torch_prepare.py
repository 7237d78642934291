"""``prepare`` on the CPU: a pass-through that keeps len, structures and errors.

The structure tests move batches to torch's ``meta`` device, which every build has: they
go through the same nested-structure mapping as the CUDA copies.
"""

from __future__ import annotations

import sys
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import pytest
import torch
from _torch_data import FailingDataset, RecordingStream
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from dloop import Loop
from dloop_torch import PreparedData, prepare


class Pair(NamedTuple):
    inputs: torch.Tensor
    targets: torch.Tensor


@dataclass(frozen=True)
class Example:
    features: torch.Tensor
    name: str
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    cached: int = field(init=False, default=7)


def nested_collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """A batch with tensors in every kind of container ``prepare`` knows."""
    x = torch.stack([sample[0] for sample in samples])
    y = torch.stack([sample[1] for sample in samples])
    return {
        "pair": Pair(x, y),
        "list": [x, (y, "label"), 3],
        "example": Example(x, "batch", {"mask": y > 0}),
        "ordered": OrderedDict(first=x),
        "size": len(samples),
    }


def nested_loader() -> DataLoader[Any]:
    dataset = TensorDataset(torch.randn(12, 3), torch.randn(12))
    return DataLoader(dataset, batch_size=4, collate_fn=nested_collate)


def assert_same_structure(got: Any, expected: Any, device: str = "cpu") -> None:
    """Same container types all the way down, equal tensors (on ``device``), equal rest."""
    assert type(got) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert got.device.type == device
        if device != "meta":
            assert torch.equal(got, expected)
        else:
            assert got.shape == expected.shape
            assert got.dtype == expected.dtype
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for got_item, expected_item in zip(got, expected, strict=True):
            assert_same_structure(got_item, expected_item, device)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same_structure(got[key], expected[key], device)
    elif isinstance(expected, Example):
        assert_same_structure(got.features, expected.features, device)
        assert_same_structure(got.extra, expected.extra, device)
        assert (got.name, got.cached) == (expected.name, expected.cached)
    else:
        assert got == expected


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_on_the_cpu_a_nested_collate_passes_through_unchanged(device: Any) -> None:
    loader = nested_loader()
    expected = list(loader)

    got = [batch for batch, _ in Loop(prepare(loader, device=device), max_epochs=1)]

    assert len(got) == len(expected) == 3
    for got_batch, expected_batch in zip(got, expected, strict=True):
        assert_same_structure(got_batch, expected_batch)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_on_the_cpu_batches_are_the_very_objects_the_data_yields(device: Any) -> None:
    batches = [(torch.ones(2), {"y": torch.zeros(2)}) for _ in range(3)]

    got = list(prepare(batches, device=device))

    assert len(got) == 3
    assert all(g is b for g, b in zip(got, batches, strict=True))


def test_moved_batches_keep_their_structure_with_every_tensor_on_the_device() -> None:
    loader = nested_loader()
    expected = list(loader)

    got = list(prepare(loader, device="meta"))

    for got_batch, expected_batch in zip(got, expected, strict=True):
        assert_same_structure(got_batch, expected_batch, device="meta")


def test_moved_mappings_and_sequences_keep_their_own_types() -> None:
    factory_default: defaultdict[str, Any] = defaultdict(list, {"x": torch.ones(1)})

    class Row(tuple):  # type: ignore[type-arg]
        pass

    (got,) = prepare([[factory_default, Row([torch.ones(1), 5])]], device="meta")

    assert type(got[0]) is defaultdict
    assert got[0].default_factory is list
    assert got[0]["x"].device.type == "meta"
    assert type(got[1]) is Row
    assert got[1][0].device.type == "meta"
    assert got[1][1] == 5


class Span(tuple):  # type: ignore[type-arg]
    """A tuple subclass whose constructor takes its two items one by one."""

    def __new__(cls, start: Any, end: Any) -> Span:
        return super().__new__(cls, (start, end))


class Tagged(list):  # type: ignore[type-arg]
    """A list subclass whose constructor needs more than its items."""

    def __init__(self, items: Any, tag: str) -> None:
        super().__init__(items)
        self.tag = tag


class Scored(Pair):
    """A namedtuple subclass whose constructor needs more than its fields."""

    def __new__(cls, inputs: Any, targets: Any, score: float) -> Scored:
        instance = super().__new__(cls, inputs, targets)
        instance.__dict__["score"] = score
        return instance


class Locked(list):  # type: ignore[type-arg]
    """A list subclass that can be neither made from its items nor copied."""

    def __init__(self, items: Any, key: str) -> None:
        super().__init__(items)

    def __copy__(self) -> Locked:
        raise TypeError("Locked cannot be copied")


def test_sequences_whose_constructor_takes_other_arguments_keep_their_type() -> None:
    """Rebuilt as copies with their items replaced (attributes kept), never turned into
    a plain tuple or list."""
    span = Span(torch.ones(1), 7)
    span.note = "kept"  # type: ignore[attr-defined]
    tagged = Tagged([torch.ones(2), "x"], tag="train")
    scored = Scored(torch.ones(3), torch.zeros(3), score=0.5)
    batch: list[Any] = [span, tagged, scored]

    got: list[Any] = next(iter(prepare([batch], device="meta")))

    assert [type(item) for item in got] == [Span, Tagged, Scored]
    assert got[0][0].device.type == "meta"
    assert (got[0][1], got[0].note) == (7, "kept")
    assert got[1][0].device.type == "meta"
    assert (got[1][1], got[1].tag) == ("x", "train")
    assert got[2].inputs.device.type == got[2].targets.device.type == "meta"
    assert got[2].__dict__ == {"score": 0.5}
    # The user's batch is left as it was.
    assert span[0].device.type == tagged[0].device.type == scored.inputs.device.type == "cpu"


def test_a_tuple_of_a_type_that_cannot_be_made_is_kept_when_nothing_in_it_moves() -> None:
    version = sys.version_info  # its type cannot be instantiated
    (got,) = prepare([(torch.ones(1), version)], device="meta")

    assert got[1] is version


def test_a_sequence_that_can_be_neither_made_nor_copied_is_a_type_error_naming_it() -> None:
    prepared = prepare([[Locked([torch.ones(1)], key="k")]], device="meta")

    with pytest.raises(TypeError) as raised:
        next(iter(prepared))

    message = str(raised.value)
    assert "a batch holds a list of type test_torch_prepare.Locked" in message
    assert "Locked cannot be copied" in message
    assert "yield a plain list" in message


def test_len_is_the_dataloaders() -> None:
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=3)

    assert len(prepare(loader)) == len(loader) == 4
    assert len(Loop(prepare(loader), max_epochs=2)) == 8


def test_data_without_len_has_no_len_and_the_loop_finds_epoch_ends_itself() -> None:
    loader = DataLoader(RecordingStream(5), batch_size=2)
    prepared = prepare(loader)

    with pytest.raises(TypeError):
        len(prepared)
    loop = Loop(prepared, max_epochs=2)
    with pytest.raises(TypeError):
        len(loop)
    assert [loop.state.epoch_step for _ in loop] == [0, 1, 2, 0, 1, 2]


def test_an_iterable_dataset_with_len_gives_the_epoch_length() -> None:
    class SizedStream(IterableDataset[torch.Tensor]):
        def __iter__(self) -> Any:
            return iter(torch.arange(6))

        def __len__(self) -> int:
            return 6

    assert len(prepare(DataLoader(SizedStream(), batch_size=2))) == 3


@pytest.mark.parametrize("device", [None, "meta"])
def test_an_error_from_the_data_reaches_the_loop_unchanged_after_the_batches_before(
    device: str | None,
) -> None:
    dataset = FailingDataset(12, fail_at=9)
    loop = Loop(prepare(DataLoader(dataset, batch_size=4), device=device), max_epochs=1)
    batches = iter(loop)
    assert [next(batches)[0].shape for _ in range(2)] == [torch.Size([4, 1])] * 2

    with pytest.raises(KeyError) as raised:
        next(batches)  # the batch of samples 8..11: sample 9 fails

    assert raised.value is dataset.error


def test_prepared_data_remembers_its_arguments() -> None:
    loader = DataLoader(TensorDataset(torch.arange(4)))

    prepared = prepare(loader, device="meta", prefetch=3)

    assert isinstance(prepared, PreparedData)
    assert prepared.dataloader is loader
    assert prepared.device == torch.device("meta")
    assert prepared.prefetch == 3
    assert prepare(loader, device="cpu").device is None


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"prefetch": 0}, ValueError, "prefetch must be an int >= 1.*, got 0"),
        ({"prefetch": -2}, ValueError, "prefetch must be an int >= 1.*, got -2"),
        ({"prefetch": 1.5}, TypeError, r"prefetch must be an int >= 1.*, got 1\.5 \(a float\)"),
        ({"prefetch": True}, TypeError, "prefetch must be an int >= 1.*, got True"),
        ({"device": "gpu"}, ValueError, "device must name a torch device .* got 'gpu'"),
        ({"device": 1.0}, TypeError, r"device must be None, a str .* got 1\.0 \(a float\)"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(
    arguments: dict[str, Any], error: type, message: str
) -> None:
    loader = DataLoader(TensorDataset(torch.arange(4)))

    with pytest.raises(error, match=message):
        prepare(loader, **arguments)


def test_data_that_is_not_iterable_is_rejected() -> None:
    with pytest.raises(TypeError, match="dataloader must be a torch DataLoader"):
        prepare(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    ["abc", b"abc", bytearray(b"abc"), memoryview(b"abc")],
    ids=["str", "bytes", "bytearray", "memoryview"],
)
def test_text_or_bytes_are_refused_as_data(data: Any) -> None:
    """Iterating them gives characters or ints, never batches (as prefetch_to_device)."""
    kind = type(data).__name__
    with pytest.raises(
        TypeError, match=rf"dataloader must be a torch DataLoader .*, not a {kind}: got "
    ):
        prepare(data)


@pytest.mark.parametrize(
    "data",
    [{"x": torch.ones(2)}, MappingProxyType({"x": torch.ones(2)}), OrderedDict(x=torch.ones(2))],
    ids=["dict", "mappingproxy", "ordereddict"],
)
def test_a_mapping_is_refused_as_data_since_iterating_it_gives_keys(data: Any) -> None:
    with pytest.raises(TypeError) as raised:
        prepare(data)

    message = str(raised.value)
    assert message.startswith("dataloader must be a torch DataLoader")
    assert f"not a mapping: iterating a {type(data).__name__} gives its keys" in message
    assert "pass [batch]" in message


def test_a_list_of_dict_batches_is_still_taken() -> None:
    batches = [{"x": torch.ones(2)}, {"x": torch.zeros(2)}]

    assert [batch["x"].tolist() for batch, _ in Loop(prepare(batches), max_epochs=1)] == [
        [1.0, 1.0],
        [0.0, 0.0],
    ]


def test_a_cuda_device_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loader = DataLoader(TensorDataset(torch.arange(4)))

    with pytest.raises(ValueError, match=r"device='cuda' needs CUDA, but torch\.cuda"):
        prepare(loader, device="cuda")


def test_a_cuda_device_this_machine_lacks_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    loader = DataLoader(TensorDataset(torch.arange(4)))

    with pytest.raises(ValueError, match=r"device='cuda:2' does not exist: .* 2 CUDA device"):
        prepare(loader, device="cuda:2")
