"""The states of other libraries in the loop's JSON state dict: numpy scalars and arrays
(a dataset's counters, its ``RandomState``) are written exactly, tagged, and come back
with their types, dtypes and shapes; what cannot be written exactly is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader  # type: ignore[import-untyped]

from dloop import Loop
from dloop_torch import prepare
from dloop_torch._jsonable import from_json, to_json

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


def through_json(value: Any) -> Any:
    return from_json(json.loads(json.dumps(to_json(value))))


SCALARS = {
    "int64": np.int64(-(2**62)),
    "uint8": np.uint8(255),
    "float32": np.float32(1.1),
    "float64": np.float64(0.1),
    "float64-nan": np.float64("nan"),
    "bool": np.bool_(True),
    "complex": np.complex128(1 + 2j),
    "str": np.str_("épée"),
    "bytes": np.bytes_(b"\x00\xff"),
    "datetime": np.datetime64("2026-12-04T21:00:00", "s"),
}


@pytest.mark.parametrize("value", SCALARS.values(), ids=SCALARS.keys())
def test_a_numpy_scalar_comes_back_with_its_type_and_value(value: Any) -> None:
    back = through_json(value)

    assert type(back) is type(value)
    assert back.dtype == value.dtype
    assert back.tobytes() == value.tobytes()


ARRAYS = {
    "int64": np.arange(12, dtype=np.int64).reshape(3, 4),
    "uint32-state": np.random.RandomState(3).get_state(legacy=False)["state"]["key"],
    "float16": np.linspace(0, 1, 7, dtype=np.float16),
    "big-endian": np.arange(5, dtype=">i4"),
    "fortran-order": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "zero-d": np.array(7, dtype=np.int8),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "bool": np.array([True, False, True]),
    "unicode": np.array(["a", "bcd"]),
    "structured": np.array([(1, 2.5), (3, 4.5)], dtype=[("id", "<i4"), ("w", "<f8")]),
}


@pytest.mark.parametrize("value", ARRAYS.values(), ids=ARRAYS.keys())
def test_a_numpy_array_comes_back_with_its_dtype_shape_and_values(value: Any) -> None:
    back = through_json(value)

    assert type(back) is np.ndarray
    assert back.dtype == value.dtype
    assert back.shape == value.shape
    assert np.array_equal(back, value)
    assert back.flags.writeable


def test_a_random_states_state_round_trips_and_draws_the_same() -> None:
    state = np.random.RandomState(11)
    state.standard_normal(3)  # a cached Gaussian in the state
    saved = {
        "rng": state.get_state(),
        "bit_generator": np.random.default_rng(5).bit_generator.state,
    }

    back = through_json(saved)

    restored = np.random.RandomState()
    restored.set_state(back["rng"])
    assert np.array_equal(restored.standard_normal(5), state.standard_normal(5))
    generator = np.random.default_rng()
    generator.bit_generator.state = back["bit_generator"]
    assert generator.integers(0, 2**31, 4).tolist() == (
        np.random.default_rng(5).integers(0, 2**31, 4).tolist()
    )


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        pytest.param(np.array([1, "a", None], dtype=object), "ndarray", id="object-array"),
        pytest.param(
            np.ma.masked_array([1, 2], mask=[False, True]), "MaskedArray", id="masked-array"
        ),
    ],
)
def test_what_cannot_be_written_exactly_is_refused_naming_where(value: Any, kind: str) -> None:
    with pytest.raises(TypeError, match=rf"state\['dataset'\]\[2\] is a numpy {kind} of dtype"):
        to_json({"dataset": [0, 1, value]})


class NumpyStream(IterableDataset[torch.Tensor]):
    """Samples ``tensor([i, noise])``: the position is an ``np.int64`` and the noise comes
    from a ``np.random.RandomState``, both in its state."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = np.int64(0)
        self.random = np.random.RandomState(0)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while self.position < self.size:
            index = int(self.position)
            self.position += 1
            yield torch.tensor([index, self.random.randint(1000)])
        self.position = np.int64(0)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "random": self.random.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert type(state["position"]) is np.int64
        self.position = state["position"]
        self.random.set_state(state["random"])


def test_a_dataset_state_of_numpy_values_resumes_through_a_json_state_dict() -> None:
    def run(stop_at: int | None = None, state: Any = None) -> tuple[list[Any], Any]:
        loop = Loop(prepare(StatefulDataLoader(NumpyStream(20), batch_size=2)), max_epochs=2)
        if state is not None:
            loop.load_state_dict(state)
        seen = []
        for batch, _ in loop:
            seen.append(batch.tolist())
            if loop.state.step == stop_at:
                break
        return seen, json.loads(json.dumps(loop.state_dict()))

    whole, _ = run()
    _, state = run(stop_at=6)

    rest, _ = run(state=state)

    assert rest == whole[7:]
