"""A tiny torch model trained on the CPU with the README's loop, through ``prepare``.

The loop's events drive the training: ``optimizer_step`` (every 4 steps) applies the
accumulated gradients, ``lr_decay`` (at step 64) divides the learning rate by 10, ``log``
(every second of a manual clock) records the loss, and ``TRAINING_END`` writes a
checkpoint of ``loop.state_dict()`` next to the model's and the optimizer's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from dloop import Event, Loop, LoopEvents
from dloop.testing import ManualClock
from dloop_torch import prepare

SAMPLES = 512
BATCH_SIZE = 16
BATCHES_PER_EPOCH = SAMPLES // BATCH_SIZE
EPOCHS = 4
TOTAL_STEPS = EPOCHS * BATCHES_PER_EPOCH
ACCUMULATE = 4
DECAY_STEP = 64
LEARNING_RATE = 0.1


def synthetic_data(seed: int, samples: int = SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy samples of y = x @ w + 0.3."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, 4, generator=generator) * 2 - 1
    y = x @ torch.tensor([1.5, -2.0, 0.5, 1.0]) + 0.3
    y += 0.05 * torch.randn(samples, generator=generator)
    return x, y[:, None]


def make_loader() -> DataLoader[tuple[torch.Tensor, ...]]:
    dataset = TensorDataset(*synthetic_data(seed=0))
    # One replica: a shuffle whose order depends only on the seed and set_epoch.
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=1, rank=0, shuffle=True, seed=0
    )
    return DataLoader(dataset, batch_size=BATCH_SIZE, sampler=sampler)


def make_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.5)


def validation_loss(model: nn.Module) -> float:
    x, y = synthetic_data(seed=1, samples=256)
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(x), y))


@dataclass
class Record:
    """What happened in a run, step by step."""

    losses: dict[int, float] = field(default_factory=dict)
    learning_rates: dict[int, float] = field(default_factory=dict)
    events: dict[str, list[int]] = field(default_factory=dict)
    updates: int = 0
    last_state: dict[str, Any] = field(default_factory=dict)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    checkpoint: Path,
    *,
    resume_from: dict[str, Any] | None = None,
    stop_after_step: int | None = None,
) -> Record:
    """The README's loop; ``stop_after_step`` requests a stop in that step's body."""
    loop = Loop(
        prepare(make_loader()),
        max_epochs=EPOCHS,
        events={
            "optimizer_step": Event(every_n_steps=ACCUMULATE),
            "lr_decay": Event(at_step=DECAY_STEP),
            "log": Event(every_n_seconds=1.0),
        },
        clock=ManualClock(tick=0.25),
    )
    if resume_from is not None:
        loop.load_state_dict(resume_from)
    record = Record()
    for (x, y), events in loop:
        step = loop.state.step
        loss = nn.functional.mse_loss(model(x), y)
        (loss / ACCUMULATE).backward()  # type: ignore[no-untyped-call]
        record.losses[step] = loss.item()
        for key in events:
            record.events.setdefault(str(key), []).append(step)
        if "optimizer_step" in events:
            optimizer.step()
            optimizer.zero_grad()
            record.updates += 1
        if "lr_decay" in events:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        record.learning_rates[step] = optimizer.param_groups[0]["lr"]
        if step == stop_after_step:
            loop.request_stop()
        if LoopEvents.TRAINING_END in events:
            torch.save(
                {
                    "loop": loop.state_dict(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
                checkpoint,
            )
            record.last_state = {"step": step, "elapsed": loop.state.elapsed}
    return record


def test_the_model_learns_with_the_readme_loop(tmp_path: Path) -> None:
    model, optimizer = make_model()
    before = validation_loss(model)

    record = train(model, optimizer, tmp_path / "checkpoint.pt")

    assert validation_loss(model) < 0.05 * before
    losses = [record.losses[step] for step in range(TOTAL_STEPS)]
    first, last = losses[:BATCHES_PER_EPOCH], losses[-BATCHES_PER_EPOCH:]
    assert sum(last) < 0.1 * sum(first)


def test_gradients_are_accumulated_and_the_learning_rate_decays_at_its_step(
    tmp_path: Path,
) -> None:
    model, optimizer = make_model()

    record = train(model, optimizer, tmp_path / "checkpoint.pt")

    assert record.events["optimizer_step"] == list(range(ACCUMULATE - 1, TOTAL_STEPS, ACCUMULATE))
    assert record.updates == TOTAL_STEPS // ACCUMULATE
    assert record.events["lr_decay"] == [DECAY_STEP]
    assert {record.learning_rates[step] for step in range(DECAY_STEP)} == {LEARNING_RATE}
    decayed = {record.learning_rates[step] for step in range(DECAY_STEP, TOTAL_STEPS)}
    assert decayed == {LEARNING_RATE * 0.1}
    # The manual clock moves 0.25 s per reading: "log" fires once per elapsed second.
    assert len(record.events["log"]) == int(record.last_state["elapsed"])


def test_the_checkpoint_written_at_training_end_holds_the_loop_and_the_model(
    tmp_path: Path,
) -> None:
    model, optimizer = make_model()
    path = tmp_path / "checkpoint.pt"

    record = train(model, optimizer, path)

    assert record.events[str(LoopEvents.TRAINING_END)] == [TOTAL_STEPS - 1]
    saved = torch.load(path)
    assert json.loads(json.dumps(saved["loop"])) == saved["loop"]
    assert saved["loop"]["step"] == TOTAL_STEPS - 1
    assert saved["loop"]["epoch"] == EPOCHS - 1
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved["model"][name], tensor)
    # A loop restored from it has nothing left to do.
    finished = Loop(prepare(make_loader()), max_epochs=EPOCHS)
    finished.load_state_dict(saved["loop"])
    assert len(finished) == 0
    assert list(finished) == []


def test_a_run_stopped_and_resumed_from_its_checkpoint_ends_like_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    model, optimizer = make_model()
    uninterrupted = train(model, optimizer, tmp_path / "uninterrupted.pt")

    # Stop requested in step 42's body: step 43, an optimizer step, is the last one.
    first_model, first_optimizer = make_model()
    path = tmp_path / "interrupted.pt"
    interrupted = train(first_model, first_optimizer, path, stop_after_step=42)
    assert interrupted.events[str(LoopEvents.INTERRUPTED)] == [43]

    saved = torch.load(path)
    resumed_model, resumed_optimizer = make_model()
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed = train(resumed_model, resumed_optimizer, path, resume_from=saved["loop"])

    assert sorted(resumed.losses) == list(range(44, TOTAL_STEPS))
    assert resumed.losses == {s: uninterrupted.losses[s] for s in range(44, TOTAL_STEPS)}
    assert resumed.events["lr_decay"] == [DECAY_STEP]
    for name, tensor in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor)
