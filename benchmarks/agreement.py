"""Per-step cost of agreement across two processes (torch.distributed, gloo, loopback).

Run ``python benchmarks/agreement.py [--steps N] [--repeats R]`` (part of ``tox -e bench``).
It starts two processes that each iterate their own list of batches with a trivial step
(nothing is done with a batch), so what is timed is the loop and its collectives:

- ``dloop, no sync``: the loop alone, the baseline of the ratios;
- ``dloop, sync every n`` for n = 1, 4, 16 and 64, over equal data and over uneven data
  (the second process has 10% fewer batches per epoch, so every epoch ends where its data
  ends, with ``uneven="shortest"``), sized (lists) and unsized (no ``len``: the loop looks
  ahead up to n batches);
- ``all_reduce of a flag every step``: a hand-written loop that makes one all-reduce of a
  one-element tensor per step, what libraries that agree on every step pay (DDP's Join,
  per-step ``dispatch_batches``, a padded step count with a "has data" flag).

Each variant runs ``--repeats`` times, interleaved; the table (Markdown) shows the median
µs per step on rank 0 and its ratios to the loop without a sync and to the per-step
all-reduce of a flag, from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dloop import Loop, LoopWarning
from dloop_torch import DistributedSync

FLAG = "all_reduce of a flag every step"
EPOCH = 1_000
"""Batches per epoch of the first process; the second has 10% fewer with uneven data."""


class Unsized:
    """Re-iterable data without a length: the loop finds epoch ends by looking ahead."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.length))


def epoch_length(rank: int, uneven: bool) -> int:
    return EPOCH - EPOCH // 10 if uneven and rank == 1 else EPOCH


def time_dloop(rank: int, steps: int, every: int | None, uneven: bool, sized: bool) -> float:
    length = epoch_length(rank, uneven)
    data: Iterable[int] = list(range(length)) if sized else Unsized(length)
    shortest = epoch_length(1, uneven)
    sync = None if every is None else DistributedSync(every_n_steps=every)
    loop = Loop(data, max_epochs=steps // shortest + 1, max_steps=steps, sync=sync)
    dist.barrier()
    start = time.perf_counter()
    for _batch, _events in loop:
        pass
    elapsed = time.perf_counter() - start
    return elapsed / (loop.state.step + 1)


def time_flag_every_step(rank: int, steps: int) -> float:
    data = list(range(epoch_length(rank, False)))
    flag = torch.zeros(1, dtype=torch.int64)
    dist.barrier()
    start = time.perf_counter()
    done = 0
    while done < steps:
        for _batch in data:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            done += 1
            if done == steps:
                break
    return (time.perf_counter() - start) / steps


def variants(steps: int) -> list[tuple[str, Callable[[int], float]]]:
    def dloop(every: int | None, uneven: bool, sized: bool) -> Callable[[int], float]:
        return lambda rank: time_dloop(rank, steps, every, uneven, sized)

    table = [("dloop, no sync", dloop(None, False, True))]
    for uneven in (False, True):
        for sized in (True, False):
            for every in (1, 4, 16, 64):
                data = f"{'uneven' if uneven else 'even'} {'sized' if sized else 'unsized'}"
                table.append((f"dloop, sync every {every:>2}, {data}", dloop(every, uneven, sized)))
    table.append(
        ("all_reduce of a flag every step", lambda rank: time_flag_every_step(rank, steps))
    )
    return table


def worker(rank: int, port: int, steps: int, repeats: int, queue: mp.Queue[object]) -> None:
    # With uneven data the longer process leaves batches of every epoch unused, and says so.
    warnings.simplefilter("ignore", LoopWarning)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=120),
    )
    try:
        table = variants(steps)
        results: dict[str, list[float]] = {name: [] for name, _ in table}
        for repeat in range(repeats):
            order = table[repeat % len(table) :] + table[: repeat % len(table)]
            for name, run in order:
                results[name].append(run(rank))
        if rank == 0:
            queue.put(results)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=20_000, help="steps per variant")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    queue: mp.Queue[object] = context.Queue()
    port = free_port()
    processes = [
        context.Process(target=worker, args=(rank, port, args.steps, args.repeats, queue))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    results = queue.get(timeout=1800)
    for process in processes:
        process.join(timeout=60)
    assert isinstance(results, dict)
    base = statistics.median(results["dloop, no sync"])
    flag = statistics.median(results[FLAG])
    print(
        f"two processes, gloo on loopback, {args.steps} steps per variant, medians of "
        f"{args.repeats}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"| {'variant':<42} | {'µs/step':>9} | {'vs no sync':>11} | {'vs flag every step':>18} |")
    print(f"|{'-' * 44}|{'-' * 11}:|{'-' * 12}:|{'-' * 19}:|")
    for name, times in results.items():
        median = statistics.median(times)
        print(
            f"| {name:<42} | {median * 1e6:9.2f} | {median / base:10.1f}x "
            f"| {median / flag:17.3f}x |"
        )


if __name__ == "__main__":
    main()
