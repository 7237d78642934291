"""dloop with PyTorch: a small regressor, on one process or many (torchrun).

Run from a checkout, with dloop-core and dloop-torch installed:

    python examples/torch_train.py                         # CPU
    python examples/torch_train.py --device cuda           # one GPU
    torchrun --nproc-per-node 2 examples/torch_train.py    # two processes, gloo on CPU
    torchrun --nproc-per-node 2 examples/torch_train.py --device cuda   # nccl, a GPU each
    python examples/torch_train.py --checkpoint run.pt     # saves at the end; run it again
                                                           # with more --epochs to continue
    torchrun --nproc-per-node 2 examples/torch_train.py --checkpoint run.pt   # the same

The loop is the README's: gradients accumulated over 2 batches (and averaged over the
processes at each update), a learning-rate decay at step 96, a log line every 64 steps
and every second of training time, a validation pass at the end of every epoch and a
checkpoint at ``TRAINING_END``, also when SIGTERM ends the run early: every process
saves its own loop state dict (``run-rank0.json``, ``run-rank1.json``, ...), since the
data's part of it is each process's own, and rank 0 the weights and the optimizer, the
same everywhere (``run.pt``). ``dloop_torch.prepare`` calls the
``DistributedSampler``'s ``set_epoch`` every epoch, copies batches to the GPU ahead of use
and resumes mid-epoch without loading the skipped samples; ``DistributedSync`` makes every
process log and stop on the same steps.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from dloop import Event, Loop, LoopEvents
from dloop_torch import DistributedSync, prepare

ACCUMULATE = 2
BATCH_SIZE = 32


def make_data(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy samples of y = sin(2 * x0) + x @ w, as (x, y) tensors."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, 8, generator=generator) * 2 - 1
    weights = torch.linspace(-2.0, 2.0, 8)
    noise = 0.05 * torch.randn(samples, generator=generator)
    y = torch.sin(2 * x[:, 0]) + x @ weights + noise
    return x, y[:, None]


def average_gradients(model: nn.Module) -> None:
    """Average the accumulated gradients over every process (what DDP does, once per
    update instead of once per backward)."""
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= dist.get_world_size()


def validation_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error over (x, y), averaged over every process."""
    with torch.no_grad():
        error = nn.functional.mse_loss(model(x), y).detach().reshape(1)
    if dist.is_initialized():
        dist.all_reduce(error)
        error /= dist.get_world_size()
    return float(error.item())


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--epochs", type=int, default=4, help="epochs to train (default 4)")
    parser.add_argument("--checkpoint", type=Path, help="resume from it if it exists; save to it")
    args = parser.parse_args()

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    # The same seed everywhere: every process starts from the same weights.
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)).to(device)
    # Made before init_process_group: with torch 2.13, the first optimizer imports
    # torch._dynamo, which, once a process group exists, keeps it alive past
    # destroy_process_group, and gloo may then abort the process at exit.
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    if distributed:  # torchrun set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    train(network, optimizer, device, epochs=args.epochs, checkpoint_path=args.checkpoint)
    if distributed:
        dist.destroy_process_group()


def train(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    epochs: int,
    checkpoint_path: Path | None,
) -> None:
    """Train, on this process's share of the data when torch.distributed is running."""
    distributed = dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world_size = dist.get_world_size() if distributed else 1

    def log(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    dataset = TensorDataset(*make_data(2048, seed=0))
    # Its order depends only on the seed and set_epoch, so a resumed run sees the batches
    # an uninterrupted one would; with one process it simply shuffles.
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=0
    )
    loader = DataLoader(
        dataset, batch_size=BATCH_SIZE, sampler=sampler, pin_memory=device.type == "cuda"
    )
    x_validation, y_validation = (t.to(device) for t in make_data(512, seed=1))

    loop = Loop(
        prepare(loader, device=device if device.type == "cuda" else None),
        max_epochs=epochs,
        events={
            "optimizer_step": Event(every_n_steps=ACCUMULATE),
            "lr_decay": Event(at_step=96),
            "log": Event(every_n_steps=64, every_n_seconds=1.0),
        },
        sync=DistributedSync(every_n_steps=ACCUMULATE) if distributed else None,
        stop_signals=(signal.SIGTERM,),
    )
    if checkpoint_path is not None and checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location=device)
        network.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        # This process's own state dict: another process's would replay its data order.
        loop_state = json.loads(loop_state_path(checkpoint_path, rank).read_text())
        if loop_state["step"] != saved["step"]:
            raise SystemExit(
                f"{checkpoint_path} was saved after step {saved['step']}, but this "
                f"process's loop state after step {loop_state['step']}"
            )
        loop.load_state_dict(loop_state)
        log(f"resumed from {checkpoint_path} after step {saved['step']}")
    backend = f" ({dist.get_backend()})" if distributed else ""
    log(
        f"training on {device.type}, {world_size} process(es){backend}: {len(loop)} steps "
        f"to go, {epochs} epochs x {len(loader)} batches of {BATCH_SIZE}"
    )
    before = validation_mse(network, x_validation, y_validation)
    started = time.perf_counter()

    for (x, y), events in loop:
        loss = nn.functional.mse_loss(network(x), y) / ACCUMULATE
        loss.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
        if "optimizer_step" in events or LoopEvents.TRAINING_END in events:
            if distributed:
                average_gradients(network)
            optimizer.step()
            optimizer.zero_grad()
        state = loop.state
        if "lr_decay" in events:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
            learning_rate = optimizer.param_groups[0]["lr"]
            log(f"step {state.step:4d}  learning rate decayed to {learning_rate:g}")
        if "log" in events:
            log(f"step {state.step:4d}  epoch {state.epoch}  loss {ACCUMULATE * loss.item():.4f}")
        if LoopEvents.EPOCH_END in events:
            mse = validation_mse(network, x_validation, y_validation)
            log(f"epoch {state.epoch} done  validation mse {mse:.4f}")
        if LoopEvents.TRAINING_END in events:
            if LoopEvents.INTERRUPTED in events:
                log(f"stopped by a signal after step {state.step}")
            if checkpoint_path is not None:
                # Every process saves its own loop state; then rank 0 the weights, which
                # are the same everywhere: run.pt exists only once every state does.
                save_atomically(loop_state_path(checkpoint_path, rank), loop.state_dict())
                if distributed:
                    dist.barrier()
                if rank == 0:
                    checkpoint = {
                        "step": state.step,
                        "model": network.state_dict(),
                        "optimizer": optimizer.state_dict(),
                    }
                    save_atomically(checkpoint_path, checkpoint)
                log(f"checkpoint saved to {checkpoint_path} after step {state.step}")

    after = validation_mse(network, x_validation, y_validation)
    seconds = time.perf_counter() - started
    log(
        f"done after step {loop.state.step} in {seconds:.1f} s: validation mse "
        f"{before:.4f} -> {after:.4f}"
    )


if __name__ == "__main__":
    main()
