"""Steps per second of a copy-bound training step fed from pinned host memory (CUDA only).

Run ``python benchmarks/torch_prefetch.py [--batch-mib M] [--hidden H] [--steps N]``
on a machine with a CUDA device. Every variant trains the same small MLP on the same
batches, which live in pinned host memory (as a DataLoader with ``pin_memory=True``
gives them), except the first:

- ``on device``: the batches were copied to the GPU beforehand: the upper limit;
- ``naive .to(device)``: ``batch.to(device)`` in the loop body, the usual first version;
- ``naive non_blocking``: ``batch.to(device, non_blocking=True)``: the host does not
  wait, but the copy still runs on the compute stream, before the step;
- ``prepare``: ``dloop_torch.prepare(batches, device="cuda", prefetch=P)``: copies run
  ``P`` batches ahead on a side stream, overlapping the steps.

With ``--hidden`` small the step is copy-bound: the copy of a batch takes longer than the
step's compute, and the best a prefetcher can do is hide the compute behind the copies.
The variants run interleaved within each repeat; the table shows medians over repeats.
Without CUDA the script says so and exits with status 0, measuring nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from dloop_torch import prepare

Step = Callable[[torch.Tensor], torch.Tensor]


def make_step(features: int, hidden: int, device: torch.device) -> Step:
    """One SGD step of a two-layer MLP on a batch; returns the loss (not synchronised)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step(batch: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = model(batch).square().mean()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def timed(batches: Iterable[torch.Tensor], step: Step, sync_every: int) -> float:
    """Steps per second of ``step`` over ``batches``, with a host sync (``.item()``, as a
    log line would) every ``sync_every`` steps and at the end."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    count = 0
    total = torch.zeros((), device="cuda")
    for batch in batches:
        total += step(batch)
        count += 1
        if count % sync_every == 0:
            total.item()
    total.item()
    torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def gpu_seconds(work: Callable[[], object], repeats: int = 5) -> float:
    """Median GPU time of ``work`` on the current stream."""
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        work()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)) / 1000.0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch-mib", type=int, default=64, help="MiB per batch (64)")
    parser.add_argument("--rows", type=int, default=256, help="rows per batch (256)")
    parser.add_argument("--hidden", type=int, default=256, help="MLP hidden width (256)")
    parser.add_argument("--distinct", type=int, default=8, help="distinct host batches (8)")
    parser.add_argument("--steps", type=int, default=300, help="steps per measurement (300)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (5)")
    parser.add_argument("--prefetch", type=int, default=2, help="prepare's prefetch (2)")
    parser.add_argument("--sync-every", type=int, default=10, help="host sync period (10)")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print(
            "torch_prefetch: no CUDA device (torch.cuda.is_available() is False); this "
            "benchmark measures host-to-GPU copies and needs one. Nothing was measured.",
            file=sys.stderr,
        )
        return 0

    device = torch.device("cuda", torch.cuda.current_device())
    features = args.batch_mib * 2**20 // 4 // args.rows
    host = [torch.randn(args.rows, features).pin_memory() for _ in range(args.distinct)]
    on_device = [batch.to(device) for batch in host]
    schedule = [i % args.distinct for i in range(args.steps)]
    step = make_step(features, args.hidden, device)

    copy_seconds = gpu_seconds(lambda: host[0].to(device, non_blocking=True))
    step_seconds = gpu_seconds(lambda: step(on_device[0]))

    variants: dict[str, Callable[[], float]] = {
        "on device": lambda: timed((on_device[i] for i in schedule), step, args.sync_every),
        "naive .to(device)": lambda: timed(
            (host[i].to(device) for i in schedule), step, args.sync_every
        ),
        "naive non_blocking": lambda: timed(
            (host[i].to(device, non_blocking=True) for i in schedule), step, args.sync_every
        ),
        f"prepare(prefetch={args.prefetch})": lambda: timed(
            prepare([host[i] for i in schedule], device=device, prefetch=args.prefetch),
            step,
            args.sync_every,
        ),
    }
    for run in variants.values():  # warm-up: kernels, the caching allocator
        run()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            rates[name].append(variants[name]())
    median = {name: statistics.median(values) for name, values in rates.items()}

    print(
        f"torch_prefetch: {torch.cuda.get_device_name(device)}, torch {torch.__version__}; "
        f"batches of {args.rows} x {features} float32 ({args.batch_mib} MiB) in pinned host "
        f"memory, MLP hidden width {args.hidden}; {args.steps} steps x {args.repeats} repeats"
    )
    print(
        f"one batch copy {copy_seconds * 1e3:.3f} ms "
        f"({args.batch_mib / 1024 / copy_seconds:.1f} GiB/s); one step on device data "
        f"{step_seconds * 1e3:.3f} ms: "
        f"{'copy' if copy_seconds > step_seconds else 'compute'}-bound"
    )
    upper = median["on device"]
    print(f"{'variant':<24} {'steps/s':>10} {'of on-device':>13}")
    for name in names:
        print(f"{name:<24} {median[name]:>10.1f} {median[name] / upper:>12.2f}x")
    prepared = median[names[-1]]
    print(
        f"prepare / naive .to(device): {prepared / median['naive .to(device)']:.2f}x; "
        f"prepare / naive non_blocking: {prepared / median['naive non_blocking']:.2f}x; "
        f"prepare / on device: {prepared / upper:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
