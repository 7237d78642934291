"""Interrupt and resume the Flax NNX example's training through Orbax, in this process.

The training pieces come from ``examples/flax_train.py`` itself (its model, its jitted
steps, its loop and its Orbax save and restore), over a smaller data set and on a manual
clock that each step moves on by the same amount, so that its time-based checkpoints fall
on the same steps in every run. (``loop.state_dict()`` reads the clock too, and the time
between a save and the next step is not counted after a resume: a clock that ticked on
every reading, or moved on after the save, would put a resumed run's deadlines a tick off.) A run is
stopped after some steps, saved through a ``CheckpointManager``, and continued by a run
built from nothing that restores the latest checkpoint: what it sees step by step (each
batch's content and the events that fire on it) must continue the uninterrupted run's, and
its final parameters must be the uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp  # type: ignore[import-untyped]  # no py.typed
import pytest
from flax import nnx

from dloop import LoopEvents
from dloop.testing import ManualClock

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flax_train.py"

SAMPLES = 320
BATCH_SIZE = 32
BATCHES_PER_EPOCH = SAMPLES // BATCH_SIZE
TOTAL_STEPS = 5 * BATCHES_PER_EPOCH  # the example's loop runs 5 epochs
STEP_SECONDS = (
    3 / 64
)  # each step "takes" 3/64 s (exact in binary): a checkpoint every 10 or 11 steps

Record = tuple[str, tuple[str, ...]]


def load_example() -> ModuleType:
    """Import ``examples/flax_train.py`` as the module ``flax_train``."""
    spec = importlib.util.spec_from_file_location("flax_train", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


example = load_example()


def fingerprint(batch: Any) -> str:
    """A digest of a batch's content (every array's bytes)."""
    digest = hashlib.sha256()
    for array in jax.tree.leaves(batch):
        digest.update(np.asarray(array).tobytes())
    return digest.hexdigest()[:16]


@dataclass
class Run:
    """What one process of training saw and left."""

    records: list[Record] = field(default_factory=list)
    length: int = 0  # len(loop) before iterating
    restored_step: int = -1
    params: list[np.ndarray[Any, Any]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)


def restore_without_the_loop(manager: ocp.CheckpointManager, training: Any) -> int:
    """The mistake that the resume test must catch: restore the model and the optimizer,
    and leave the loop where a new run starts."""
    step: int = manager.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, training.state())
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )
    training.load(restored["state"])
    return step


def train(directory: Path, *, stop_after_steps: int | None = None, with_loop: bool = True) -> Run:
    """The example's loop body, recording each step; everything is built anew, and the
    latest checkpoint in ``directory``, when there is one, is restored before iterating."""
    x, y = example.synthetic_data(SAMPLES, seed=0)
    training = example.Training.new(seed=0)
    clock = ManualClock()
    loop = example.make_loop(example.Batches(x, y, batch_size=BATCH_SIZE, seed=0), clock=clock)
    manager = example.checkpoint_manager(directory)
    run = Run()
    try:
        if manager.latest_step() is not None:
            run.restored_step = (
                example.restore_checkpoint(manager, loop, training)
                if with_loop
                else restore_without_the_loop(manager, training)
            )
        run.length = len(loop)
        for (bx, by), events in loop:
            clock.advance(STEP_SECONDS)  # the step's work, all of it before any save
            run.records.append((fingerprint((bx, by)), tuple(sorted(map(str, events)))))
            training.summed, _ = example.accumulate(training.model, training.summed, bx, by)
            if "Update" in events:
                training.summed = example.apply_update(
                    training.model, training.optimizer, training.summed
                )
            stopping = loop.state.step + 1 == stop_after_steps
            if "Checkpoint" in events or LoopEvents.TRAINING_END in events or stopping:
                example.save_checkpoint(manager, loop, training)
            if stopping:
                break
        manager.wait_until_finished()
        run.checkpoints = list(manager.all_steps())
    finally:
        manager.close()
    run.params = [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(training.model))]
    return run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train(tmp_path_factory.mktemp("uninterrupted"))


def test_the_uninterrupted_run_has_the_events_the_resumes_must_reproduce(
    uninterrupted: Run,
) -> None:
    def steps_with(name: str) -> list[int]:
        return [step for step, (_, names) in enumerate(uninterrupted.records) if name in names]

    assert uninterrupted.length == len(uninterrupted.records) == TOTAL_STEPS
    assert steps_with("Update") == list(range(3, TOTAL_STEPS, 4))
    assert steps_with(str(LoopEvents.EPOCH_END)) == list(range(9, TOTAL_STEPS, 10))
    assert steps_with("Checkpoint") == [11, 22, 32, 43]
    assert steps_with(str(LoopEvents.TRAINING_END)) == [TOTAL_STEPS - 1]
    # Each epoch is a new order of the same batches.
    epochs = [uninterrupted.records[e * 10 : (e + 1) * 10] for e in range(5)]
    assert len({tuple(epoch) for epoch in epochs}) == 5
    # Orbax kept the last 3 checkpoints, the final step among them.
    assert len(uninterrupted.checkpoints) == 3
    assert uninterrupted.checkpoints[-1] == TOTAL_STEPS - 1


@pytest.mark.parametrize(
    "stop_after_steps",
    [
        pytest.param(6, id="mid-epoch-mid-accumulation"),
        pytest.param(8, id="mid-epoch-right-after-an-update"),
        pytest.param(10, id="at-an-epoch-end-mid-accumulation"),
        pytest.param(12, id="on-a-time-based-checkpoint-step"),
        pytest.param(20, id="at-an-epoch-end-and-an-update"),
        pytest.param(33, id="mid-epoch-3-mid-accumulation"),
    ],
)
def test_a_run_resumed_from_orbax_continues_the_uninterrupted_one(
    tmp_path: Path, uninterrupted: Run, stop_after_steps: int
) -> None:
    first = train(tmp_path, stop_after_steps=stop_after_steps)
    assert len(first.records) == stop_after_steps
    assert first.checkpoints[-1] == stop_after_steps - 1
    for name in ("state", "loop"):  # the loop item next to the state item
        assert (tmp_path / str(stop_after_steps - 1) / name).is_dir()

    resumed = train(tmp_path)
    assert resumed.restored_step == stop_after_steps - 1
    assert resumed.length == TOTAL_STEPS - stop_after_steps
    assert first.records + resumed.records == uninterrupted.records
    for leaf, expected in zip(resumed.params, uninterrupted.params, strict=True):
        np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-7)


def test_the_comparison_fails_when_the_loop_is_left_out_of_the_checkpoint(
    tmp_path: Path, uninterrupted: Run
) -> None:
    first = train(tmp_path, stop_after_steps=6)
    forgetful = train(tmp_path, with_loop=False)
    assert forgetful.restored_step == 5
    # Without its state dict the loop starts over: the same model and optimizer see
    # step 0's batch again, and all 50 steps follow.
    assert forgetful.length == TOTAL_STEPS
    assert forgetful.records[0] == uninterrupted.records[0]
    assert first.records + forgetful.records != uninterrupted.records
