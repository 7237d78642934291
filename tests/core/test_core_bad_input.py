"""Rule 13: bad input gets a clear error naming the argument and the value, never a hang."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from _core_reference import GeneratorFactory, drive

from dloop import Event, Loop, LoopEvents
from dloop.testing import ManualClock


class UnhashableKeyEvents(Mapping[Any, Event]):
    """A mapping that hands out an unhashable key, which a dict cannot hold."""

    def __getitem__(self, key: object) -> Event:
        return Event(every_n_steps=1)

    def __iter__(self) -> Iterator[Any]:
        return iter([["not", "hashable"]])

    def __len__(self) -> int:
        return 1


def named(argument: str, value: str) -> str:
    """A pattern for a message naming ``argument``, then ``value`` somewhere after it."""
    return rf"{re.escape(argument)}.*{re.escape(value)}"


def test_an_event_with_no_trigger_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"at least one trigger.*every_n_steps"):
        Event()


@pytest.mark.parametrize("argument", ["every_n_steps", "every_n_epochs"])
@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (True, TypeError, "True"),
        (False, TypeError, "False"),
        (2.0, TypeError, "2.0"),
        ("3", TypeError, "'3'"),
        (0, ValueError, "got 0"),
        (-4, ValueError, "-4"),
    ],
)
def test_a_count_that_is_a_bool_a_float_or_below_1_is_rejected(
    argument: str, value: object, error: type[Exception], shown: str
) -> None:
    triggers: dict[str, Any] = {argument: value}
    with pytest.raises(error, match=named(argument, shown)):
        Event(**triggers)


@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (-1, ValueError, "-1"),
        (True, TypeError, "True"),
        (2.5, TypeError, "2.5"),
        ([3, -2], ValueError, "-2"),
        ([3, False], TypeError, "False"),
        ([], ValueError, "[]"),
        ("7", TypeError, "'7'"),
    ],
)
def test_at_step_must_be_ints_at_least_0(value: object, error: type[Exception], shown: str) -> None:
    with pytest.raises(error, match=named("at_step", shown)):
        Event(at_step=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (-1.0, ValueError, "-1.0"),
        (0, ValueError, "got 0"),
        (math.nan, ValueError, "nan"),
        (math.inf, ValueError, "inf"),
        (-math.inf, ValueError, "-inf"),
        (True, TypeError, "True"),
        ("5", TypeError, "'5'"),
    ],
)
def test_every_n_seconds_must_be_a_finite_number_above_0(
    value: object, error: type[Exception], shown: str
) -> None:
    with pytest.raises(error, match=named("every_n_seconds", shown)):
        Event(every_n_seconds=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (-0.5, ValueError, "-0.5"),
        (math.nan, ValueError, "nan"),
        (math.inf, ValueError, "inf"),
        ([1.0, math.inf], ValueError, "inf"),
        ([2.0, -3.0], ValueError, "-3.0"),
        ([], ValueError, "[]"),
        ("10", TypeError, "'10'"),
        ([1.0, "2"], TypeError, "'2'"),
    ],
)
def test_at_time_must_be_finite_numbers_at_least_0(
    value: object, error: type[Exception], shown: str
) -> None:
    with pytest.raises(error, match=named("at_time", shown)):
        Event(at_time=value)  # type: ignore[arg-type]


def test_a_condition_function_that_is_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=named("condition_function", "42")):
        Event(condition_function=42)  # type: ignore[arg-type]


def test_a_loop_events_member_as_an_event_key_is_rejected() -> None:
    with pytest.raises(ValueError, match=named("events", "EPOCH_END")):
        Loop(range(3), max_steps=3, events={LoopEvents.EPOCH_END: Event(every_n_steps=1)})


def test_an_unhashable_event_key_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=named("events", "['not', 'hashable']")):
        Loop(range(3), max_steps=3, events=UnhashableKeyEvents())


def test_an_event_value_that_is_not_an_event_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=named("events['log']", "16")):
        Loop(range(3), max_steps=3, events={"log": 16})  # type: ignore[dict-item]


def test_events_that_are_not_a_mapping_are_a_type_error() -> None:
    with pytest.raises(TypeError, match=named("events", "[Event(")):
        Loop(range(3), max_steps=3, events=[Event(every_n_steps=1)])  # type: ignore[arg-type]


def test_a_loop_with_no_stopping_condition_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"max_epochs, max_steps or max_seconds"):
        Loop(range(3))


@pytest.mark.parametrize("argument", ["max_epochs", "max_steps", "epoch_length"])
@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (0, ValueError, "got 0"),
        (-2, ValueError, "-2"),
        (True, TypeError, "True"),
        (3.0, TypeError, "3.0"),
    ],
)
def test_zero_negative_or_non_int_limits_are_rejected(
    argument: str, value: object, error: type[Exception], shown: str
) -> None:
    options: dict[str, Any] = {"max_steps": 5, argument: value}
    with pytest.raises(error, match=named(argument, shown)):
        Loop(range(3), **options)


@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (0, ValueError, "got 0"),
        (-2.5, ValueError, "-2.5"),
        (math.nan, ValueError, "nan"),
        (math.inf, ValueError, "inf"),
        (True, TypeError, "True"),
        ("60", TypeError, "'60'"),
    ],
)
def test_max_seconds_must_be_a_finite_number_above_0(
    value: object, error: type[Exception], shown: str
) -> None:
    with pytest.raises(error, match=named("max_seconds", shown)):
        Loop(range(3), max_seconds=value)  # type: ignore[arg-type]


def test_an_empty_list_is_a_value_error_naming_epoch_0() -> None:
    with pytest.raises(ValueError, match=r"no batch in epoch 0"):
        drive(Loop([], max_epochs=1), ManualClock())


def test_empty_data_without_a_length_is_a_value_error_naming_epoch_0() -> None:
    loop = Loop(GeneratorFactory(lambda: iter(())), max_steps=10)
    with pytest.raises(ValueError, match=r"no batch in epoch 0"):
        drive(loop, ManualClock())


def test_a_one_shot_iterator_with_max_epochs_2_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match=r"max_epochs=2.*one-shot"):
        Loop(iter([1, 2, 3]), max_epochs=2)


def test_data_that_is_not_iterable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=named("data", "42")):
        Loop(42, max_steps=1)  # type: ignore[arg-type]


def test_a_clock_that_is_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=named("clock", "1.5")):
        Loop(range(3), max_steps=3, clock=1.5)  # type: ignore[arg-type]
