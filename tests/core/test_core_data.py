"""Rule 12: any re-iterable works, a one-shot iterator for one pass, and set_epoch."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from _core_reference import (
    EPOCH_END,
    EpochData,
    GeneratorFactory,
    SizedEpochData,
    collect_batches,
    drive,
    fired_steps,
)

from dloop import Loop
from dloop.testing import ManualClock


class IndexedDataset:
    """Data with only ``__getitem__`` and ``__len__`` (the old sequence protocol)."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> str:
        if index >= 3:
            raise IndexError(index)
        return "abc"[index]


def test_a_list_is_re_iterated_for_each_epoch() -> None:
    records = drive(Loop(["a", "b", "c"], max_epochs=3), ManualClock())
    assert [record.batch for record in records] == ["a", "b", "c"] * 3


def test_a_generator_factory_is_re_iterated_for_each_epoch() -> None:
    data = GeneratorFactory(lambda: (n * n for n in range(3)))
    records = drive(Loop(data, max_epochs=2), ManualClock())
    assert [record.batch for record in records] == [0, 1, 4, 0, 1, 4]
    assert data.passes == 2


def test_a_sequence_with_only_getitem_works() -> None:
    records = drive(Loop(IndexedDataset(), max_epochs=2), ManualClock())  # type: ignore[arg-type]
    assert [record.batch for record in records] == list("abcabc")
    assert fired_steps(records, EPOCH_END) == [2, 5]


def test_a_one_shot_iterator_works_for_a_single_pass() -> None:
    records = drive(Loop(iter("xyz"), max_epochs=1), ManualClock())
    assert [record.batch for record in records] == ["x", "y", "z"]
    assert fired_steps(records, EPOCH_END) == [2]


def test_an_endless_stream_with_max_steps_is_read_only_as_far_as_the_run_goes() -> None:
    stream = itertools.count()
    records = drive(Loop(stream, max_steps=4), ManualClock())
    assert [record.batch for record in records] == [0, 1, 2, 3]
    assert next(stream) == 4  # the batch after the last one is still there for the caller


def test_set_epoch_is_called_with_the_epoch_number_before_each_pass() -> None:
    data = SizedEpochData(2)
    records = drive(Loop(data, max_epochs=3), ManualClock())
    assert data.log == [
        ("set_epoch", 0),
        ("iter", 0),
        ("set_epoch", 1),
        ("iter", 1),
        ("set_epoch", 2),
        ("iter", 2),
    ]
    assert [record.batch for record in records] == [(e, i) for e in range(3) for i in range(2)]


def test_set_epoch_is_called_before_each_pass_of_data_without_a_length() -> None:
    data = EpochData(2)
    records = drive(Loop(data, max_epochs=2), ManualClock())
    assert [call for call in data.log if call[0] == "set_epoch"] == [
        ("set_epoch", 0),
        ("set_epoch", 1),
    ]
    assert [record.batch for record in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_a_set_epoch_attribute_that_is_not_callable_is_ignored() -> None:
    class WithAttribute:
        set_epoch = 5

        def __iter__(self) -> Iterator[int]:
            return iter([1, 2])

    records = drive(Loop(WithAttribute(), max_epochs=2), ManualClock())
    assert [record.batch for record in records] == [1, 2, 1, 2]


def test_the_loop_does_not_read_past_the_last_step_of_a_re_iterable_epoch() -> None:
    data = SizedEpochData(5)
    drive(Loop(data, max_steps=3), ManualClock())
    assert data.produced == [(0, 0), (0, 1), (0, 2)]


def test_sized_data_that_yields_fewer_batches_than_its_len_is_an_error_naming_the_epoch() -> None:
    class Liar:
        def __len__(self) -> int:
            return 4

        def __iter__(self) -> Iterator[int]:
            return iter([1, 2])

    loop = Loop(Liar(), max_epochs=2)
    with pytest.raises(ValueError, match=r"2 batches in epoch 0.*epoch length 4"):
        drive(loop, ManualClock())


def test_a_generator_factory_that_runs_dry_in_a_later_epoch_is_an_error_naming_it() -> None:
    passes = iter([["a", "b"], []])
    data = GeneratorFactory(lambda: iter(next(passes)))
    loop = Loop(data, max_epochs=3)
    batches: list[object] = []
    with pytest.raises(ValueError, match=r"no batch in epoch 1"):
        collect_batches(loop, batches)
    assert batches == ["a", "b"]  # and no stale batch was repeated
