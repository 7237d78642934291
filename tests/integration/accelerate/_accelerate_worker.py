"""Traced runs of a small Accelerate training job driven by dloop, for the accelerate tests.

The single-process tests import it. The two-process tests run it on both ranks:

    python -m torch.distributed.run --nproc-per-node 2 _accelerate_worker.py OUTPUT_DIR

Each rank then writes ``OUTPUT_DIR/rank{RANK}.json``: for Accelerate's default sampler and
for its ``SeedableRandomSampler``, the length of the loop, the trace of an uninterrupted
run, the traces of runs cut at each of ``CUTS`` and resumed through ``save_state`` /
``load_state`` (the loop registered), and of one resumed without the loop registered;
and the traces of two runs whose ranks would decide differently on their own
(``AGREEMENT``): clocks that run at different rates on each rank (a time-based event
and ``max_seconds``), and a stop requested on rank 1 only.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

# Imported before any process group exists: with torch 2.13, torch._dynamo imported
# once one exists (Accelerate's prepare and the first optimizer import it) keeps the
# group alive past end_training's destroy_process_group, and gloo's threads, outliving
# the interpreter, can abort a finished run at exit ("terminate called without an
# active exception").
import torch._dynamo
from accelerate import Accelerator  # type: ignore[import-untyped]  # no py.typed
from accelerate.utils import DataLoaderConfiguration  # type: ignore[import-untyped]
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dloop import Event, Loop, LoopEvents
from dloop.testing import ManualClock
from dloop_torch import DistributedSync, prepare

SAMPLES = 96
BATCH_SIZE = 4
EPOCHS = 3
ACCUMULATE = 4
DATA_SEED = 11
SEEDABLE_SEED = 5
SECONDS_PER_STEP = 0.25
"""Each step moves the loop's clock by this much (a binary fraction: no rounding)."""
CUTS = (5, 11, 17)
"""Steps after which a two-process run is interrupted (per rank: 12 batches an epoch):
mid-epoch, the last batch of epoch 0, mid-epoch 1."""

AGREEMENT = ("clocks", "stop")
"""The runs in which the ranks would decide differently without agreeing."""
MAX_SECONDS = 3.0
"""The time budget of the ``"clocks"`` run: rank 1 (0.5 s a step) reaches it near step 5;
rank 0 (0.25 s a step) would not within its epoch."""
STOP_AFTER = 5
"""In the ``"stop"`` run, rank 1 alone requests a stop in the body of this step."""

Row = list[Any]
"""[step, epoch, sample ids of the batch, sorted event names]."""


def make_accelerator(*, seedable: bool) -> Accelerator:
    """An Accelerator on the CPU; ``seedable`` replaces a shuffling sampler by Accelerate's
    ``SeedableRandomSampler``."""
    config = DataLoaderConfiguration(
        use_seedable_sampler=seedable, data_seed=SEEDABLE_SEED if seedable else None
    )
    return Accelerator(cpu=True, dataloader_config=config)


def make_loader() -> DataLoader[tuple[torch.Tensor, ...]]:
    """A shuffled loader of (sample id, x, y) with a seeded generator."""
    ids = torch.arange(SAMPLES)
    x = torch.linspace(-1.0, 1.0, SAMPLES)[:, None].repeat(1, 4)
    y = x.sum(dim=1, keepdim=True)
    generator = torch.Generator().manual_seed(DATA_SEED)
    return DataLoader(
        TensorDataset(ids, x, y), batch_size=BATCH_SIZE, shuffle=True, generator=generator
    )


def reference_epochs(*, seedable: bool) -> list[list[list[int]]]:
    """The sample ids of every epoch's batches before Accelerate shards them: for its
    default sampler, those of the same loader without Accelerate, iterated ``EPOCHS``
    times; for ``SeedableRandomSampler``, a permutation drawn from its seed plus the epoch.
    """
    if not seedable:
        loader = make_loader()
        return [[ids.tolist() for ids, _, _ in loader] for _ in range(EPOCHS)]
    epochs = []
    for epoch in range(EPOCHS):
        generator = torch.Generator().manual_seed(SEEDABLE_SEED + epoch)
        epochs.append(torch.randperm(SAMPLES, generator=generator).reshape(-1, BATCH_SIZE).tolist())
    return epochs


def make_loop(
    accelerator: Accelerator, loader: DataLoader[Any], clock: ManualClock, *, prepared: bool
) -> Loop[Any]:
    """The loop over Accelerate's prepared ``loader`` (through ``dloop_torch.prepare`` when
    ``prepared``), agreed across processes when there are several."""
    several = accelerator.num_processes > 1
    return Loop(
        prepare(loader) if prepared else loader,
        max_epochs=EPOCHS,
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=5),
            "Checkpoint": Event(every_n_seconds=1.5),
        },
        clock=clock,
        sync=DistributedSync(every_n_steps=ACCUMULATE) if several else None,
    )


def run(
    *,
    seedable: bool,
    register: bool = True,
    prepared: bool = True,
    resume_from: Path | None = None,
    stop_after: int | None = None,
    save_to: Path | None = None,
) -> list[Row]:
    """Train, from ``resume_from`` when given, and return the trace of every step.

    With ``stop_after``, the run saves its state to ``save_to`` after that step and ends
    there, as an interrupted job would. ``register`` registers the loop for Accelerate's
    checkpointing (else only the model, optimizer and random states are saved);
    ``prepared`` hands the loop the loader through ``dloop_torch.prepare`` (else as it is).
    """
    accelerator = make_accelerator(seedable=seedable)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer, loader = accelerator.prepare(model, optimizer, make_loader())
    clock = ManualClock()
    loop = make_loop(accelerator, loader, clock, prepared=prepared)
    if register:
        accelerator.register_for_checkpointing(loop)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
    rows: list[Row] = []
    for (ids, x, y), events in loop:
        clock.advance(SECONDS_PER_STEP)
        state = loop.state
        rows.append([state.step, state.epoch, ids.tolist(), sorted(str(key) for key in events)])
        update = "Update" in events or LoopEvents.TRAINING_END in events
        with nullcontext() if update else accelerator.no_sync(model):
            accelerator.backward(nn.functional.mse_loss(model(x), y) / ACCUMULATE)
        if update:
            optimizer.step()
            optimizer.zero_grad()
        if state.step == stop_after:
            assert save_to is not None
            accelerator.save_state(str(save_to))
            accelerator.wait_for_everyone()
            break
    return rows


def loop_length(*, seedable: bool) -> int:
    """``len(loop)`` of a new loop over Accelerate's prepared loader."""
    accelerator = make_accelerator(seedable=seedable)
    loader = accelerator.prepare(make_loader())
    return len(make_loop(accelerator, loader, ManualClock(), prepared=True))


def resumed(
    *, seedable: bool, cut: int, directory: Path, register: bool = True, prepared: bool = True
) -> list[Row]:
    """The trace of a run cut after step ``cut`` followed by that of its resumed run."""
    first = run(
        seedable=seedable, register=register, prepared=prepared, stop_after=cut, save_to=directory
    )
    return first + run(
        seedable=seedable, register=register, prepared=prepared, resume_from=directory
    )


def agreement(kind: str) -> list[Row]:
    """The trace of a run in which the ranks would decide differently on their own.

    Rank r's clock moves (r + 1) * ``SECONDS_PER_STEP`` a step, so rank 1's ``Timed``
    deadlines and ``max_seconds`` (``kind`` "clocks") come twice as soon as rank 0's; with
    ``kind`` "stop", rank 1 alone calls ``request_stop()`` after step ``STOP_AFTER``.
    Through ``DistributedSync``, both must still take the same steps with the same events.
    One epoch, and no collective in the body, so that a run without agreement ends (with
    other events or steps on each rank) instead of waiting in a collective that the other
    rank never joins (Accelerate's loader broadcasts at the start of every epoch).
    """
    accelerator = make_accelerator(seedable=False)
    loader = accelerator.prepare(make_loader())
    rank = accelerator.process_index
    clock = ManualClock()
    loop = Loop(
        prepare(loader),
        max_epochs=1,
        max_seconds=MAX_SECONDS if kind == "clocks" else None,
        events={"Update": Event(every_n_steps=ACCUMULATE), "Timed": Event(every_n_seconds=1.0)},
        clock=clock,
        sync=DistributedSync(every_n_steps=ACCUMULATE),
    )
    rows: list[Row] = []
    for (ids, _, _), events in loop:
        clock.advance((rank + 1) * SECONDS_PER_STEP)
        state = loop.state
        rows.append([state.step, state.epoch, ids.tolist(), sorted(str(key) for key in events)])
        if kind == "stop" and rank == 1 and state.step == STOP_AFTER:
            loop.request_stop()
    return rows


def main() -> None:
    """Run every scenario on this rank of a two-process job; write its JSON."""
    output = Path(sys.argv[1])
    results: dict[str, Any] = {}
    for seedable in (False, True):
        name = "seedable" if seedable else "default"
        results[name] = {
            "length": loop_length(seedable=seedable),
            "uninterrupted": run(seedable=seedable),
            "resumed": {
                str(cut): resumed(seedable=seedable, cut=cut, directory=output / f"{name}-{cut}")
                for cut in CUTS
            },
            "unregistered": resumed(
                seedable=seedable,
                cut=CUTS[0],
                directory=output / f"{name}-unregistered",
                register=False,
            ),
        }
    results["agreement"] = {kind: agreement(kind) for kind in AGREEMENT}
    accelerator = make_accelerator(seedable=False)
    rank = accelerator.process_index
    results["world_size"] = accelerator.num_processes
    (output / f"rank{rank}.json").write_text(json.dumps(results))
    accelerator.wait_for_everyone()  # no rank tears the group down while another uses it
    accelerator.end_training()


if __name__ == "__main__":
    main()
