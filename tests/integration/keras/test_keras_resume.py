"""Interrupt and resume a Keras 3 model trained on JAX, through Keras's own checkpoint.

The pieces are those of ``examples/keras_train.py``: its data, model, jitted steps, loop
and checkpoint functions. A run is cut after ``cut`` steps and saves its checkpoint
(``model.keras`` with the optimizer, the pending gradients, the loop's state dict); a fresh
process-like start builds everything again from that checkpoint and continues. The resumed
run must see the same batches and the same step- and epoch-based events on every step, and
end on the same weights, as a run that was never interrupted. The time-based
``Checkpoint`` event is left out of the comparison: a resumed run's clock continues from
the saved ``elapsed``, not counting the time between the save and the restart, so its
deadlines fall up to a step later than in a run that never stopped. A ``ManualClock``
moved 0.1 s per step still makes it fire, so checkpoints are written mid-run as well.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from dloop import Loop, LoopEvents
from dloop.testing import ManualClock

os.environ.setdefault("KERAS_BACKEND", "jax")  # before the example imports Keras

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "keras_train.py"
SPEC = importlib.util.spec_from_file_location("keras_train", EXAMPLE)
assert SPEC is not None
assert SPEC.loader is not None
example: Any = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = example
SPEC.loader.exec_module(example)

import keras  # type: ignore[import-untyped, unused-ignore]  # noqa: E402  # after the backend is set

pytestmark = [
    # Keras 3.15's Variable.__array__ takes no ``copy`` keyword, which numpy 2 reports on
    # every ``model.save``.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
]

SAMPLES = 256
BATCH_SIZE = 32
BATCHES_PER_EPOCH = SAMPLES // BATCH_SIZE  # 8
EPOCHS = 3
STEPS = EPOCHS * BATCHES_PER_EPOCH  # 24; updates on steps 3, 7, 11, ...
STEP_SECONDS = 0.1  # each step takes 0.1 s of the ManualClock: "Checkpoint" (0.5 s) fires

Step = tuple[str, tuple[str, ...]]


def fingerprint(x: npt.NDArray[np.float32], y: npt.NDArray[np.float32]) -> str:
    """A short digest of a batch's content."""
    return hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]


def names(events: frozenset[Hashable]) -> tuple[str, ...]:
    """The sorted names of a step's events, without the time-based ``Checkpoint``."""
    return tuple(sorted(str(key) for key in events if key != "Checkpoint"))


def make_data() -> Any:
    x, y = example.make_dataset(SAMPLES, seed=0)
    return example.ShuffledBatches(x, y, batch_size=BATCH_SIZE, seed=0)


@dataclass
class Run:
    """What one run did: (batch fingerprint, sorted event names) per step, and its result."""

    steps: list[Step]
    length: int  # len(loop) before the first batch
    weights: list[npt.NDArray[np.float32]]
    checkpoints: int = 0  # saves, on "Checkpoint" and at the end


def train(directory: Path, *, max_steps: int | None = None, load_loop_state: bool = True) -> Run:
    """Train from the checkpoint in ``directory`` (or from scratch); save on the example's
    events and at the end."""
    clock = ManualClock()
    loop = example.make_loop(make_data(), epochs=EPOCHS, max_steps=max_steps, clock=clock)
    if (directory / "loop.json").exists():
        model, state, loop_state = example.load_checkpoint(directory)
        if load_loop_state:
            loop.load_state_dict(loop_state)
    else:
        model = example.build_model()
        state = example.TrainState.from_model(model)
    steps = example.compile_steps(model)
    record = Run(steps=[], length=len(loop), weights=[])
    for (x, y), events in loop:
        record.steps.append((fingerprint(x, y), names(events)))
        state, _ = steps.accumulate(state, x, y)
        if "Update" in events:
            state = steps.update(state)
        if "Checkpoint" in events or LoopEvents.TRAINING_END in events:
            example.save_checkpoint(directory, model, state, loop)
            record.checkpoints += 1
        clock.advance(STEP_SECONDS)
    record.weights = [np.asarray(value) for value in state.trainable]
    return record


def without_training_end(steps: list[Step]) -> list[Step]:
    """The steps of a run that was cut short, without the end that the cut added."""
    return [
        (batch, tuple(n for n in events if n != "LoopEvents.TRAINING_END"))
        for batch, events in steps
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train(tmp_path_factory.mktemp("uninterrupted"))


def test_the_uninterrupted_run_has_the_expected_steps_and_events(uninterrupted: Run) -> None:
    assert uninterrupted.length == len(uninterrupted.steps) == STEPS
    events = [events for _, events in uninterrupted.steps]
    assert [s for s, e in enumerate(events) if "Update" in e] == list(range(3, STEPS, 4))
    assert [s for s, e in enumerate(events) if "LoopEvents.EPOCH_END" in e] == [7, 15, 23]
    assert [s for s, e in enumerate(events) if "LoopEvents.TRAINING_END" in e] == [STEPS - 1]
    assert uninterrupted.checkpoints == 5  # at 0.5, 1.0, 1.5 and 2.0 s, and at the end
    # Each epoch is a new order of the same batches.
    batches = [batch for batch, _ in uninterrupted.steps]
    epochs = [batches[i : i + BATCHES_PER_EPOCH] for i in range(0, STEPS, BATCHES_PER_EPOCH)]
    assert epochs[0] != epochs[1]
    assert len(set(batches)) == STEPS  # no batch repeats (a new shuffle makes new batches)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(3, id="mid-epoch-mid-accumulation"),
        pytest.param(4, id="mid-epoch-after-an-update"),
        pytest.param(8, id="at-an-epoch-end"),
        pytest.param(13, id="mid-second-epoch"),
        pytest.param(16, id="at-the-second-epoch-end"),
    ],
)
def test_a_resume_through_the_keras_checkpoint_continues_the_uninterrupted_run(
    uninterrupted: Run, tmp_path: Path, cut: int
) -> None:
    first = train(tmp_path, max_steps=cut)
    resumed = train(tmp_path)

    assert first.length == cut
    assert first.steps[-1][1].count("LoopEvents.TRAINING_END") == 1
    assert without_training_end(first.steps) == uninterrupted.steps[:cut]
    assert_continues(uninterrupted, resumed, cut)


def assert_continues(uninterrupted: Run, resumed: Run, cut: int) -> None:
    """``resumed`` is the uninterrupted run from step ``cut`` on: its length, its batches
    and events, and its final weights."""
    assert resumed.length == STEPS - cut
    assert resumed.steps == uninterrupted.steps[cut:]
    for got, expected in zip(resumed.weights, uninterrupted.weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_leaving_the_loop_state_out_of_the_checkpoint_fails_the_comparison(
    uninterrupted: Run, tmp_path: Path
) -> None:
    """The comparison is sensitive: a resume that restores only what Keras saved (model,
    optimizer, gradients) starts the loop again at step 0, and ``assert_continues`` fails,
    even at an epoch end, where both runs open an epoch on their next step."""
    cut = BATCHES_PER_EPOCH
    train(tmp_path, max_steps=cut)
    resumed = train(tmp_path, load_loop_state=False)

    with pytest.raises(AssertionError):
        assert_continues(uninterrupted, resumed, cut)
    # Not only the length: over the same number of steps, the batches differ too.
    assert [b for b, _ in resumed.steps[: STEPS - cut]] != [b for b, _ in uninterrupted.steps[cut:]]
    assert not all(
        np.allclose(got, expected, rtol=1e-6, atol=1e-6)
        for got, expected in zip(resumed.weights, uninterrupted.weights, strict=True)
    )


def test_len_of_the_loop_counts_the_steps_still_to_come() -> None:
    data = make_data()
    assert len(example.make_loop(data, epochs=EPOCHS)) == STEPS
    assert len(example.make_loop(data, epochs=EPOCHS, max_steps=10)) == 10
    assert len(example.make_loop(data, epochs=EPOCHS, max_steps=100)) == STEPS
    loop = example.make_loop(data, epochs=EPOCHS)
    for _ in zip(range(11), loop, strict=False):
        pass
    state = loop.state_dict()
    resumed = example.make_loop(make_data(), epochs=EPOCHS)
    resumed.load_state_dict(state)
    assert len(resumed) == STEPS - 11
    assert len(list(resumed)) == STEPS - 11


class ShuffledPyDataset(keras.utils.PyDataset):  # type: ignore[misc]
    """The example's batches as a ``keras.utils.PyDataset``, reshuffled in ``set_epoch``."""

    def __init__(self, batch_size: int, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.x, self.y = example.make_dataset(SAMPLES, seed=0)
        self.batch_size = batch_size
        self.seed = seed
        self.order = np.arange(SAMPLES)

    def set_epoch(self, epoch: int) -> None:
        self.order = np.random.default_rng(self.seed + epoch).permutation(SAMPLES)

    def __len__(self) -> int:
        return SAMPLES // self.batch_size

    def __getitem__(self, index: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]


def test_a_keras_py_dataset_with_set_epoch_resumes_exactly(uninterrupted: Run) -> None:
    """A ``PyDataset`` is re-iterable and has ``len``: ``Loop`` takes it as it is."""

    def steps(loop: Loop[Any]) -> list[Step]:
        return [(fingerprint(x, y), names(events)) for (x, y), events in loop]

    def make_loop() -> Loop[Any]:
        dataset = ShuffledPyDataset(batch_size=BATCH_SIZE, seed=0)
        loop: Loop[Any] = example.make_loop(dataset, epochs=EPOCHS)
        return loop

    loop = make_loop()
    assert len(loop) == STEPS
    # The same batches and events, in the same order, as with the example's data class.
    assert steps(loop) == uninterrupted.steps
    cut = 11
    first = make_loop()
    for _ in zip(range(cut), first, strict=False):
        pass
    resumed = make_loop()
    resumed.load_state_dict(first.state_dict())
    assert steps(resumed) == uninterrupted.steps[cut:]
