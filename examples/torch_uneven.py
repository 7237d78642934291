"""dloop with unequal shards: two processes, DDP over gloo, no padding sampler, no hang.

Run from a checkout, with dloop-core and dloop-torch installed:

    python examples/torch_uneven.py                        # starts two processes itself
    torchrun --nproc-per-node 2 examples/torch_uneven.py   # or let torchrun start them
    python examples/torch_uneven.py --checkpoint run.pt    # saves at the end; run it again
                                                           # with more --epochs to continue

Each process trains on its own shard, and the shards differ in size (rank 0 has 30% more
samples than rank 1), as they do when data is split per file or per stream. DDP all-reduces
the gradients in every backward pass, so every process must run the same number of steps:

- Training uses ``Loop(..., sync=DistributedSync(...))`` with the default
  ``uneven="shortest"``: every epoch ends, on every process, on the step where the shortest
  shard's epoch ends; the longer shard's extra batches are left out of that epoch (its
  process warns with their number, a ``dloop.LoopWarning``), and reshuffled into the next.
- Validation uses ``uneven="longest"``: the shorter process yields ``(None, events)`` steps
  with ``LoopEvents.PADDING`` until the longest shard is done, takes part in every
  collective with zeros, and every validation sample is counted exactly once: the metric
  is exact, where a padding sampler would count some samples twice.

With ``--checkpoint``, every process saves its own loop state dict (``run-rank0.json``,
``run-rank1.json``): the position in it is the same on every process, but the data's
part (here, the state of the shuffle's generator, seeded differently on each rank) is
each process's own. Rank 0 saves the weights, the same everywhere (``run.pt``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.multiprocessing.spawn import spawn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from dloop import Event, Loop, LoopEvents
from dloop_torch import DistributedSync, prepare

TRAIN_SHARDS = (520, 400)
"""Training samples of rank 0 and rank 1: unequal on purpose."""
VALIDATION_SHARDS = (130, 97)
BATCH_SIZE = 16


def make_data(samples: int, seed: int) -> TensorDataset:
    """Noisy samples of y = x @ w + 0.5."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, 4, generator=generator) * 2 - 1
    y = x @ torch.tensor([1.5, -2.0, 0.5, 3.0]) + 0.5
    y += 0.01 * torch.randn(samples, generator=generator)
    return TensorDataset(x, y[:, None])


def validate(model: nn.Module, rank: int) -> tuple[float, int]:
    """The exact validation error over every process's shard: (mse, samples)."""
    data = DataLoader(make_data(VALIDATION_SHARDS[rank], seed=100 + rank), batch_size=BATCH_SIZE)
    totals = torch.zeros(2)  # sum of squared errors, samples
    loop = Loop(
        prepare(data), max_epochs=1, sync=DistributedSync(every_n_steps=4), uneven="longest"
    )
    with torch.no_grad():
        for batch, events in loop:
            step = torch.zeros(2)
            if LoopEvents.PADDING not in events:  # a padding step has no batch: add nothing
                x, y = batch
                step = torch.stack([((model(x) - y) ** 2).sum(), torch.tensor(float(len(y)))])
            dist.all_reduce(step)  # every process, every step, padding steps too
            totals += step
    return float(totals[0] / totals[1]), int(totals[1])


def loop_state_path(checkpoint_path: Path, rank: int) -> Path:
    """Where process ``rank`` keeps its loop state dict: run.pt -> run-rank1.json."""
    return checkpoint_path.with_name(f"{checkpoint_path.stem}-rank{rank}.json")


def save_atomically(path: Path, content: Any) -> None:
    """Write ``content`` (JSON for a .json path, else torch.save) to a temporary file,
    then move it over ``path``: a run killed while saving leaves the previous file."""
    temporary = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".json":
        temporary.write_text(json.dumps(content))
    else:
        torch.save(content, temporary)
    os.replace(temporary, path)


def train(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank: int,
    world_size: int,
    epochs: int,
    checkpoint_path: Path | None,
) -> None:
    resume = checkpoint_path is not None and checkpoint_path.exists()
    if resume:
        assert checkpoint_path is not None
        saved = torch.load(checkpoint_path)
        network.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    model = DistributedDataParallel(network)  # the same parameters the optimizer holds
    loader = DataLoader(
        make_data(TRAIN_SHARDS[rank], seed=rank),
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=torch.Generator().manual_seed(rank),
    )
    loop = Loop(
        prepare(loader),
        max_epochs=epochs,
        sync=DistributedSync(every_n_steps=8),
        events={"Log": Event(every_n_steps=20)},
    )
    if resume:
        assert checkpoint_path is not None
        # This process's own state dict: rank 0's would replay rank 0's shuffle here.
        loop_state = json.loads(loop_state_path(checkpoint_path, rank).read_text())
        loop.load_state_dict(loop_state)
        if rank == 0:
            print(f"resumed from {checkpoint_path} after step {loop_state['step']}")
    before, samples = validate(model, rank)
    after = before
    for (x, y), events in loop:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]  # DDP all-reduces the gradients here
        optimizer.step()
        if "Log" in events and rank == 0:
            print(f"step {loop.state.step}: loss {loss.item():.4f}")
        if LoopEvents.EPOCH_END in events:
            after, samples = validate(model, rank)
            if rank == 0:
                print(
                    f"epoch {loop.state.epoch}: {loop.state.epoch_length} steps on every "
                    f"rank, validation mse {after:.4f} over {samples} samples"
                )
        if LoopEvents.TRAINING_END in events and checkpoint_path is not None:
            # Every process saves its own loop state; then rank 0 the weights.
            save_atomically(loop_state_path(checkpoint_path, rank), loop.state_dict())
            dist.barrier()
            if rank == 0:
                weights = {"model": network.state_dict(), "optimizer": optimizer.state_dict()}
                save_atomically(checkpoint_path, weights)
                print(f"checkpoint saved to {checkpoint_path} after step {loop.state.step}")
    if rank == 0:
        print(f"{world_size} processes, validation mse {before:.4f} -> {after:.4f}")


def run(rank: int, world_size: int, port: int, epochs: int, checkpoint: Path | None) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same weights on every process
    network = nn.Linear(4, 1)
    # Made before init_process_group: with torch 2.13, the first optimizer imports
    # torch._dynamo, which, once a process group exists, keeps it alive past
    # destroy_process_group, and gloo may then abort the process at exit
    # ("terminate called without an active exception").
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}" if port else "env://",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        train(network, optimizer, rank, world_size, epochs, checkpoint)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, help="resume from it if it exists; save to it")
    args = parser.parse_args()
    if "RANK" in os.environ:  # started by torchrun
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        run(rank, world_size, 0, args.epochs, args.checkpoint)
    else:
        arguments = (2, free_port(), args.epochs, args.checkpoint)
        spawn(run, args=arguments, nprocs=2)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
