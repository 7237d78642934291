"""dloop with Hugging Face Accelerate: a small regressor, on one process or several.

Run from a checkout, with dloop-core, dloop-torch and accelerate installed:

    python examples/accelerate_train.py                                   # one process
    python -m torch.distributed.run --nproc-per-node 2 examples/accelerate_train.py
    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_train.py
    python examples/accelerate_train.py --checkpoint run --stop-after-steps 98  # cut short
    python examples/accelerate_train.py --checkpoint run                  # resumes it

The two-process lines start two processes through torchrun: on a machine without CUDA
they train on the CPU over gloo. (With accelerate 1.16, ``accelerate launch --cpu
--num_processes 2`` starts a single process unless given an MPI ``--mpirun_hostfile``.)

Accelerate owns the devices, DDP, the gathering of metrics and the checkpoint files;
dloop owns *when*: the optimizer step every ``ACCUMULATE`` batches, a log line every 64
steps and every 2 seconds of training time, a validation pass at every epoch end, a
checkpoint every ``--checkpoint-every`` seconds and at the end, and the exact position
of a resumed run. The loop is registered with ``accelerator.register_for_checkpointing``,
so that ``save_state`` / ``load_state`` carry its state dict (step, epoch, time events and
the order of the shuffled epoch) next to the model's, the optimizer's and the random
states. Each checkpoint goes into a new folder inside ``--checkpoint``, and a one-line
``latest`` file, replaced atomically once every process has written its part, names it:
a job killed while saving resumes from the checkpoint before, whole.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator  # type: ignore[import-untyped]  # no py.typed
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dloop import Event, Loop, LoopEvents
from dloop_torch import DistributedSync, prepare

ACCUMULATE = 4
BATCH_SIZE = 32


def make_data(samples: int, seed: int) -> TensorDataset:
    """Noisy samples of y = sin(2 * x0) + x @ w, as a dataset of (x, y)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, 8, generator=generator) * 2 - 1
    weights = torch.linspace(-2.0, 2.0, 8)
    noise = 0.05 * torch.randn(samples, generator=generator)
    y = torch.sin(2 * x[:, 0]) + x @ weights + noise
    return TensorDataset(x, y[:, None])


def validation_mse(
    accelerator: Accelerator, model: nn.Module, loader: DataLoader[list[torch.Tensor]]
) -> float:
    """Mean squared error over the whole validation set, every process's share gathered
    (``gather_for_metrics`` drops the samples Accelerate repeats to even out the shares)."""
    model.eval()
    errors = []
    with torch.no_grad():
        for x, y in loader:
            errors.append(accelerator.gather_for_metrics((model(x) - y) ** 2))
    model.train()
    return float(torch.cat(errors).mean().item())


def save_checkpoint(accelerator: Accelerator, checkpoint: Path, step: int) -> None:
    """``save_state`` into ``checkpoint/step-NNNNNN``, then point ``checkpoint/latest`` at
    it and remove the folders before it. Every process calls it."""
    folder = checkpoint / f"step-{step:06d}"
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()  # every process's part is written
    if accelerator.is_main_process:
        temporary = checkpoint / "latest.tmp"
        temporary.write_text(folder.name)
        os.replace(temporary, checkpoint / "latest")  # atomic: the switch to the new folder
        for old in checkpoint.glob("step-*"):
            if old != folder:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def latest_checkpoint(checkpoint: Path) -> Path | None:
    """The folder ``checkpoint/latest`` names: the last checkpoint saved whole, if any."""
    pointer = checkpoint / "latest"
    return checkpoint / pointer.read_text().strip() if pointer.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs to train (default 4)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="directory of checkpoints: resumes from its latest one, if any, and saves there",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=30.0,
        help="seconds of training time between checkpoints (default 30)",
    )
    parser.add_argument(
        "--stop-after-steps",
        type=int,
        help="save a checkpoint and stop at the first optimizer step from this step on, "
        "as a preempted job would",
    )
    args = parser.parse_args()

    # The same seed everywhere: every process starts from the same weights.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    # Made before the process group exists: with torch 2.13 the first optimizer imports
    # torch._dynamo, which, imported once a process group exists, keeps it alive past
    # end_training's destroy_process_group; gloo's threads then outlive the interpreter,
    # and a process can abort at exit ("terminate called without an active exception").
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # Under accelerate launch or torchrun, Accelerator() joins the process group (gloo on
    # the CPU, nccl on GPUs); a plain `python` run is one process.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    train(accelerator, model, optimizer, args)
    # Every process reaches the end before any tears the process group down: a process
    # that destroys it while another still talks to it can abort in gloo's threads too.
    accelerator.wait_for_everyone()
    accelerator.end_training()


def train(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    args: argparse.Namespace,
) -> None:
    """Train, validate and checkpoint as ``args`` say, on the processes of ``accelerator``."""
    loader = DataLoader(
        make_data(2048, seed=0),
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    validation = DataLoader(make_data(512, seed=1), batch_size=64)
    model, optimizer, loader, validation = accelerator.prepare(model, optimizer, loader, validation)

    # prepare() sets the epoch on the samplers inside Accelerate's wrappers every epoch and
    # resumes a shuffled epoch mid-way in its uninterrupted order. This replaces
    # Accelerate's own resume, accelerator.skip_first_batches(loader, n), which leaves the
    # epoch's position and its order to the user's bookkeeping and has open data-order bugs
    # (https://github.com/huggingface/accelerate/issues/4195).
    loop = Loop(
        prepare(loader),
        max_epochs=args.epochs,
        events={
            "Update": Event(every_n_steps=ACCUMULATE),
            "Log": Event(every_n_steps=64, every_n_seconds=2.0),
            "Checkpoint": Event(every_n_seconds=args.checkpoint_every),
        },
        # Every process logs, checkpoints and stops on the same step; agreeing on the
        # Update steps puts time events there, where no gradient is half accumulated.
        sync=DistributedSync(every_n_steps=ACCUMULATE) if accelerator.num_processes > 1 else None,
    )
    accelerator.register_for_checkpointing(loop)
    resume_from = latest_checkpoint(args.checkpoint) if args.checkpoint is not None else None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))  # calls loop.load_state_dict too
        accelerator.print(f"resumed from {resume_from} after step {loop.state.step}")
    accelerator.print(
        f"training on {accelerator.device.type}, {accelerator.num_processes} process(es): "
        f"{len(loop)} steps to go, {args.epochs} epochs x {len(loader)} batches of "
        f"{BATCH_SIZE} per process"
    )
    before = validation_mse(accelerator, model, validation)
    started = time.perf_counter()
    checkpoint_due = False

    for (x, y), events in loop:
        state = loop.state
        update = "Update" in events or LoopEvents.TRAINING_END in events
        # Gradient accumulation is dloop's: between updates, no_sync skips DDP's
        # all-reduce; the backward of the update step reduces the accumulated sum. The
        # optimizer steps whenever it is called, as Accelerator(gradient_accumulation_steps=1)
        # leaves it (accelerator.accumulate would keep a second step count of its own).
        with nullcontext() if update else accelerator.no_sync(model):
            loss = nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss / ACCUMULATE)
        if update:
            optimizer.step()
            optimizer.zero_grad()
        if "Log" in events:
            accelerator.print(f"step {state.step:4d}  epoch {state.epoch}  loss {loss.item():.4f}")
        if LoopEvents.EPOCH_END in events:
            mse = validation_mse(accelerator, model, validation)
            accelerator.print(f"epoch {state.epoch} done  validation mse {mse:.4f}")
        # A checkpoint (or a stop) waits for an optimizer step: save_state keeps no
        # gradients, so the state saved is "steps 0..step done, nothing half accumulated".
        checkpoint_due = checkpoint_due or "Checkpoint" in events
        stopping = args.stop_after_steps is not None and state.step >= args.stop_after_steps
        if not update:
            continue
        if args.checkpoint is not None and (
            checkpoint_due or stopping or LoopEvents.TRAINING_END in events
        ):
            save_checkpoint(accelerator, args.checkpoint, state.step)  # with loop.state_dict()
            accelerator.print(f"checkpoint saved to {args.checkpoint} after step {state.step}")
            checkpoint_due = False
        if stopping:
            accelerator.print(f"stopped after step {state.step}")
            break

    after = validation_mse(accelerator, model, validation)
    seconds = time.perf_counter() - started
    accelerator.print(
        f"done after step {loop.state.step} in {seconds:.1f} s: validation mse "
        f"{before:.4f} -> {after:.4f}"
    )


if __name__ == "__main__":
    main()
