"""A small training run under Lightning Fabric and dloop, recorded step by step, that a
test stops at a step, checkpoints with ``fabric.save`` and resumes with ``fabric.load``.

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
from dloop_torch import DistributedSync, prepare

SAMPLES = 48
BATCH_SIZE = 4
EPOCHS = 3
UPDATE_EVERY = 2

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
