"""One rank of the two-process gloo tests in test_torch_distributed.py.

    python _torch_distributed_worker.py SCENARIO RANK WORLD_SIZE PORT OUTPUT_JSON

Each rank runs its loop with a ``ManualClock`` of its own speed, so that the ranks'
elapsed times diverge. SCENARIO is "events" (time events and max_seconds, with a
collective in the handler of a time event) or "stop" (rank 1 requests a stop in the body
of step 9). The JSON written holds the trace of the agreed run, the trace the same rank
gives alone (no sync), and the all-reduces made by ``DistributedSync``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from dloop import Event, Loop
from dloop.testing import ManualClock
from dloop_torch import DistributedSync

SECONDS_PER_STEP = {0: 0.05, 1: 0.13}
"""Each clock reading moves a rank's clock by this much: rank 1 looks 2.6x slower."""
EVERY_N_STEPS = 4
STOP_RANK = 1
STOP_AFTER_STEP = 9


def make_loop(rank: int, sync: DistributedSync | None) -> Loop[int]:
    return Loop(
        list(range(25)),
        max_epochs=100,
        max_seconds=6.0,
        events={
            "tick": Event(every_n_seconds=1.0),
            "once": Event(at_time=2.5),
            "every_7": Event(every_n_steps=7),
        },
        clock=ManualClock(tick=SECONDS_PER_STEP[rank]),
        sync=sync,
    )


def trace(loop: Loop[int], *, rank: int, scenario: str, collective: bool) -> list[Any]:
    """[step, sorted event names] for every step on which something fires."""
    steps: list[Any] = []
    for _, events in loop:
        step = loop.state.step
        if events:
            steps.append([step, sorted(str(key) for key in events)])
        if collective and "tick" in events:
            # Hangs (until the gloo timeout) unless every rank fires "tick" on this step.
            dist.all_reduce(torch.ones(1))
        if scenario == "stop" and rank == STOP_RANK and step == STOP_AFTER_STEP:
            loop.request_stop()
    return steps


def sync_over_rank_zero(rank: int) -> dict[str, Any]:
    """A DistributedSync over the group of rank 0 alone, made on both ranks: rank 1 is
    outside it."""
    group = dist.new_group([0])  # every rank takes part in making it
    try:
        sync = DistributedSync(every_n_steps=2, group=group)
    except ValueError as error:
        return {"error": str(error)}
    return {"combined": list(sync.combine([rank + 3]))}


def main() -> None:
    scenario, rank, world_size, port, output = sys.argv[1:]
    alone = trace(make_loop(int(rank), None), rank=int(rank), scenario=scenario, collective=False)

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=int(rank),
        world_size=int(world_size),
        timeout=timedelta(seconds=30),
    )
    if scenario == "outside-group":
        Path(output).write_text(json.dumps(sync_over_rank_zero(int(rank))))
        dist.destroy_process_group()
        return
    reductions: list[dict[str, Any]] = []
    all_reduce = dist.all_reduce

    def counting_all_reduce(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if tensor.dtype == torch.int64:  # DistributedSync's; the handler's is float
            reductions.append(
                {
                    "shape": list(tensor.shape),
                    "device": str(tensor.device),
                    "max": kwargs.get("op") == dist.ReduceOp.MAX,
                }
            )
        return all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = counting_all_reduce
    combines = 0

    class CountingSync(DistributedSync):
        def combine(self, flags: Sequence[int]) -> tuple[int, ...]:
            nonlocal combines
            combines += 1
            return super().combine(flags)

    try:
        sync = CountingSync(every_n_steps=EVERY_N_STEPS)
        agreed = trace(
            make_loop(int(rank), sync), rank=int(rank), scenario=scenario, collective=True
        )
    finally:
        dist.all_reduce = all_reduce
        dist.destroy_process_group()
    Path(output).write_text(
        json.dumps(
            {"alone": alone, "agreed": agreed, "reductions": reductions, "combines": combines}
        )
    )


if __name__ == "__main__":
    main()
