"""dloop with Lightning Fabric: Fabric owns devices, processes and checkpoint files; dloop
owns when things happen.

Run from a checkout (after `pip install -e packages/dloop-core -e packages/dloop-torch
lightning-fabric`; see docs/tools/fabric.md for torch's CPU build):

    python examples/fabric_train.py                         # one process
    python examples/fabric_train.py --devices 2             # Fabric starts a second process (DDP)
    python examples/fabric_train.py --checkpoint run.ckpt   # saves there; run again to resume

The model is a small MLP fitting a noisy function of 4 inputs. `fabric.setup` and
`fabric.setup_dataloaders` wrap the model, the optimizer and a shuffling DataLoader (with
two processes, Fabric puts a DistributedSampler in it). `dloop_torch.prepare` over
Fabric's loader gives the loop its epochs: `set_epoch` reaches the sampler, also in a
resumed run, where Fabric's own count of epochs would start again from 0. The loop's
events drive gradient accumulation (no gradient all-reduce between updates), a log line,
a validation pass at every epoch end and a checkpoint every few seconds of training and
at the end (never in the middle of an accumulation: it waits for the next update). The
checkpoint is Fabric's own `fabric.save(path, state)`, with the loop in `state` beside
the model and the optimizer: Fabric calls `loop.state_dict()` and, in `fabric.load`,
`loop.load_state_dict`, so a resumed run sees the batches and events an uninterrupted
one would. It is written beside the checkpoint and renamed over it, so a job killed while
saving keeps its previous checkpoint whole.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dloop import Event, Loop, LoopEvents
from dloop_torch import DistributedSync, prepare

BATCH_SIZE = 32
ACCUMULATE = 4


def make_data(samples: int, seed: int) -> TensorDataset:
    """Noisy samples of y = sin(2*x0) - x1*x2 + 0.5*x3."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, 4, generator=generator) * 2 - 1
    y = torch.sin(2 * x[:, 0]) - x[:, 1] * x[:, 2] + 0.5 * x[:, 3]
    y += 0.02 * torch.randn(samples, generator=generator)
    return TensorDataset(x, y[:, None])


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 1))


def save_atomically(fabric: Fabric, path: Path, state: dict[str, Any]) -> None:
    """``fabric.save`` into a file beside ``path``, then rename it over ``path``: a kill
    during the save (a preempted job) leaves the previous checkpoint as it was."""
    temporary = path.with_name(f".{path.name}.tmp")
    fabric.save(temporary, state)  # process 0 writes; every process waits for it
    if fabric.global_rank == 0:
        os.replace(temporary, path)  # atomic on one file system
    fabric.barrier()


def validate(fabric: Fabric, model: nn.Module, loader: Any) -> float:
    """Mean squared error over every process's validation shard."""
    model.eval()
    totals = torch.zeros(2)  # sum of squared errors, samples
    with torch.no_grad():
        for x, y in loader:
            totals += torch.stack([((model(x) - y) ** 2).sum(), torch.tensor(float(len(y)))])
    model.train()
    totals = fabric.all_reduce(totals, reduce_op="sum")  # type: ignore[assignment]
    return float(totals[0] / totals[1])


def train(
    fabric: Fabric,
    *,
    epochs: int,
    checkpoint: Path | None,
    checkpoint_seconds: float,
    stop_after_steps: int | None,
) -> None:
    fabric.seed_everything(0)  # the same weights on every process
    network = make_model()
    model, optimizer = fabric.setup(network, torch.optim.Adam(network.parameters(), lr=1e-2))
    train_loader, validation_loader = fabric.setup_dataloaders(
        DataLoader(
            make_data(4096, seed=0),
            batch_size=BATCH_SIZE,
            shuffle=True,
            generator=torch.Generator().manual_seed(1),
        ),
        DataLoader(make_data(1024, seed=1), batch_size=256),
    )
    loop = Loop(
        prepare(train_loader),
        max_epochs=epochs,
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=64),
            "Checkpoint": Event(every_n_seconds=checkpoint_seconds),
        },
        # Every process must agree on when to stop and what fires: a time event firing
        # on one process only would make the other wait in a collective forever.
        sync=DistributedSync(every_n_steps=ACCUMULATE) if fabric.world_size > 1 else None,
    )
    state = {"model": model, "optimizer": optimizer, "loop": loop}
    if checkpoint is not None and checkpoint.exists():
        fabric.load(checkpoint, state)  # calls loop.load_state_dict(...) too
        fabric.print(f"resumed from {checkpoint} after step {loop.state.step}")
    fabric.print(
        f"{fabric.world_size} process(es): {len(loop)} steps to go, {epochs} epochs x "
        f"{len(train_loader)} batches of {BATCH_SIZE} per process"
    )
    before = validate(fabric, model, validation_loader)
    after = before
    started = time.perf_counter()
    checkpoint_due = False
    for (x, y), events in loop:
        update = "Update" in events or LoopEvents.TRAINING_END in events
        # No gradient all-reduce on the steps that only accumulate.
        with fabric.no_backward_sync(model, enabled=not update):
            loss = nn.functional.mse_loss(model(x), y) / ACCUMULATE
            fabric.backward(loss)
        if update:
            optimizer.step()
            optimizer.zero_grad()
        if "Log" in events:
            fabric.print(f"step {loop.state.step:4d}  loss {ACCUMULATE * loss.item():.4f}")
        if LoopEvents.EPOCH_END in events:
            after = validate(fabric, model, validation_loader)
            fabric.print(f"epoch {loop.state.epoch} done  validation mse {after:.4f}")
        # A checkpoint (or a stop) holds no half-accumulated gradients: it waits for an
        # update, so the state saved is "steps 0..step done, nothing half accumulated".
        checkpoint_due = checkpoint_due or "Checkpoint" in events
        stopping = stop_after_steps is not None and loop.state.step >= stop_after_steps
        if not update:
            continue
        if checkpoint is not None and (
            checkpoint_due or stopping or LoopEvents.TRAINING_END in events
        ):
            save_atomically(fabric, checkpoint, state)  # every process calls it
            checkpoint_due = False
            fabric.print(f"checkpoint saved after step {loop.state.step}")
        if stopping:
            fabric.print(f"stopping after step {loop.state.step}, as asked")
            return
    seconds = time.perf_counter() - started
    fabric.print(
        f"done after step {loop.state.step} in {seconds:.1f} s: validation mse "
        f"{before:.4f} -> {after:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=1, help="processes (DDP when > 1)")
    parser.add_argument("--accelerator", default="cpu", help='"cpu", "cuda", "auto", ...')
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--checkpoint", type=Path, help="resume from it if it exists; save to it")
    parser.add_argument("--checkpoint-seconds", type=float, default=2.0)
    parser.add_argument(
        "--stop-after-steps",
        type=int,
        help="save a checkpoint and stop at the first optimizer step from this step on, "
        "as a preempted run would",
    )
    args = parser.parse_args()
    fabric = Fabric(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
    )
    fabric.launch()  # with devices > 1, starts the other processes (running this script)
    train(
        fabric,
        epochs=args.epochs,
        checkpoint=args.checkpoint,
        checkpoint_seconds=args.checkpoint_seconds,
        stop_after_steps=args.stop_after_steps,
    )
    if torch.distributed.is_initialized():
        # Fabric leaves the process group to the process's exit, where gloo's threads can
        # abort the interpreter ("terminate called without an active exception"); every
        # process reaches the end before any tears it down.
        fabric.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
