"""A small training run under Lightning Fabric and dloop, recorded step by step, that a
test stops at a step, checkpoints with ``fabric.save`` and resumes with ``fabric.load``;
and runs whose processes would decide differently without agreeing (``agreement``).

Used in this process (one device) by the tests and, under two processes, by
``_fabric_worker.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from dloop import Event, Loop
from dloop.testing import ManualClock
from dloop_torch import DistributedSync, prepare

SAMPLES = 48
BATCH_SIZE = 4
EPOCHS = 3
UPDATE_EVERY = 2

AGREEMENT = ("clocks", "stop")
"""The runs in which the processes would decide differently without agreeing."""
SECONDS_PER_STEP = 0.25
"""Process r's clock moves (r + 1) times this much a step (binary fractions: no rounding)."""
MAX_SECONDS = 3.0
"""The time budget of the ``"clocks"`` run: process 1 reaches it at step 5, process 0 would
at step 11."""
STOP_AFTER = 8
"""In the ``"stop"`` run, process 1 alone requests a stop in the body of this step."""

Step = tuple[list[int], list[str]]
"""One step as recorded: the sample ids of its batch, the names of its events."""


def dataset() -> TensorDataset:
    """Sample i is x = (i, i mod 3) with a target; x[:, 0] tells which sample it is."""
    index = torch.arange(SAMPLES, dtype=torch.float32)
    x = torch.stack([index, index % 3], dim=1)
    return TensorDataset(x, (0.01 * index - 0.2 * (index % 3))[:, None])


def loader(sampler: str, fabric: Fabric) -> DataLoader[Any]:
    """A shuffling DataLoader: ``"random"`` (shuffle=True with a seeded generator, which
    Fabric turns into a DistributedSampler with more than one process) or
    ``"distributed"`` (a DistributedSampler of our own)."""
    data = dataset()
    if sampler == "distributed":
        own: DistributedSampler[int] = DistributedSampler(
            data, num_replicas=fabric.world_size, rank=fabric.global_rank, shuffle=True, seed=7
        )
        return DataLoader(data, batch_size=BATCH_SIZE, sampler=own)
    generator = torch.Generator().manual_seed(3)
    return DataLoader(data, batch_size=BATCH_SIZE, shuffle=True, generator=generator)


def build(fabric: Fabric, sampler: str) -> tuple[Any, Any, Loop[Any]]:
    """A fresh model, optimizer and loop, set up by Fabric."""
    torch.manual_seed(0)
    network = nn.Linear(2, 1)
    model, optimizer = fabric.setup(network, torch.optim.SGD(network.parameters(), lr=1e-3))
    data = fabric.setup_dataloaders(loader(sampler, fabric))
    loop = Loop(
        prepare(data),
        max_epochs=EPOCHS,
        events={"Update": Event(every_n_steps=UPDATE_EVERY), "Log": Event(every_n_steps=5)},
        sync=DistributedSync(every_n_steps=UPDATE_EVERY) if fabric.world_size > 1 else None,
    )
    return model, optimizer, loop


def train(
    fabric: Fabric,
    sampler: str,
    *,
    stop_after: int | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    with_loop: bool = True,
) -> tuple[list[Step], list[float], int]:
    """Train; with ``stop_after``, save to ``checkpoint`` after that step and stop; with
    ``resume``, load ``checkpoint`` first (the loop's state too, unless not ``with_loop``).

    Returns the steps this run took, the final weights and ``len(loop)`` as it began.
    """
    model, optimizer, loop = build(fabric, sampler)
    state: dict[str, Any] = {"model": model, "optimizer": optimizer}
    if with_loop:
        state["loop"] = loop
    if resume:
        assert checkpoint is not None
        fabric.load(checkpoint, state)
    length = len(loop)
    steps: list[Step] = []
    for (x, y), events in loop:
        update = "Update" in events
        with fabric.no_backward_sync(model, enabled=not update):
            fabric.backward(nn.functional.mse_loss(model(x), y))
        if update:
            optimizer.step()
            optimizer.zero_grad()
        steps.append(([int(i) for i in x[:, 0]], sorted(str(event) for event in events)))
        if loop.state.step == stop_after:
            assert checkpoint is not None
            fabric.save(checkpoint, state)
            break
    weights = [
        float(value) for value in torch.cat([p.detach().flatten() for p in model.parameters()])
    ]
    return steps, weights, length


def agreement(fabric: Fabric, kind: str) -> list[tuple[int, list[str]]]:
    """The [step, event names] of a run in which the processes would decide differently.

    Process r's clock moves (r + 1) * ``SECONDS_PER_STEP`` a step, so process 1's
    ``Timed`` deadlines and ``max_seconds`` (``kind`` "clocks") come twice as soon as
    process 0's; with ``kind`` "stop", process 1 alone calls ``request_stop()`` after step
    ``STOP_AFTER``. Through ``DistributedSync``, both must take the same steps with the
    same events. No collective runs in the body, so that a run without agreement ends
    (with other events or steps on each process) instead of waiting forever.
    """
    rank = fabric.global_rank
    clock = ManualClock()
    loop = Loop(
        prepare(fabric.setup_dataloaders(loader("random", fabric))),
        max_epochs=EPOCHS,
        max_seconds=MAX_SECONDS if kind == "clocks" else None,
        events={"Update": Event(every_n_steps=UPDATE_EVERY), "Timed": Event(every_n_seconds=1.0)},
        clock=clock,
        sync=DistributedSync(every_n_steps=UPDATE_EVERY),
    )
    steps: list[tuple[int, list[str]]] = []
    for _, events in loop:
        clock.advance((rank + 1) * SECONDS_PER_STEP)
        steps.append((loop.state.step, sorted(str(event) for event in events)))
        if kind == "stop" and rank == 1 and loop.state.step == STOP_AFTER:
            loop.request_stop()
    return steps
