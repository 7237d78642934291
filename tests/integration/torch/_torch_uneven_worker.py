"""One rank of the two-process uneven-data tests in test_torch_uneven.py.

    python _torch_uneven_worker.py SCENARIO RANK WORLD_SIZE PORT OUTPUT_JSON

Rank 0 has 10 batches per epoch, rank 1 has 7, through ``dloop_torch.prepare``: a
DataLoader over a map-style dataset (SCENARIO "map", "map-longest", "map-resume",
"map-resume-own") or over an IterableDataset split per rank ("iterable"). Every step makes
a real ``all_reduce``, as DDP's gradient all-reduce would: it hangs (until the 30 s gloo
timeout) unless both ranks run the same steps. "map-resume" stops after step 8, saves rank
0's state dict, and both ranks resume from it in new loops ("map-resume-own": each rank
from its own). The JSON written holds each step's (step, epoch,
events), the batches and what the all-reduces summed.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset

from dloop import Loop, LoopEvents, LoopWarning
from dloop_torch import DistributedSync, prepare

BATCHES = (10, 7)
BATCH_SIZE = 2
EVERY_N_STEPS = 4
NAMES: dict[object, str] = {event: event.name for event in LoopEvents}


class Shard(Dataset[int]):
    """Rank ``rank``'s samples: ``rank * 1000 + index``."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __len__(self) -> int:
        return BATCHES[self.rank] * BATCH_SIZE

    def __getitem__(self, index: int) -> int:
        return self.rank * 1000 + index


class StreamShard(IterableDataset[int]):
    """The same samples as a stream that has no length."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank * 1000, self.rank * 1000 + BATCHES[self.rank] * BATCH_SIZE))


def make_loop(scenario: str, rank: int) -> Loop[Any]:
    dataset: Dataset[int] = StreamShard(rank) if scenario == "iterable" else Shard(rank)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE)
    return Loop(
        prepare(loader),
        max_epochs=3,
        sync=DistributedSync(every_n_steps=EVERY_N_STEPS),
        uneven="longest" if scenario == "map-longest" else "shortest",
    )


def run(loop: Loop[Any], *, until_step: int | None = None) -> dict[str, Any]:
    steps: list[Any] = []
    batches: list[Any] = []
    sums: list[float] = []
    for batch, events in loop:
        real = batch is not None
        # Padding steps take part in every collective too, contributing nothing.
        value = torch.tensor([float(batch.sum()) if real else 0.0, 1.0 if real else 0.0])
        dist.all_reduce(value)
        steps.append([loop.state.step, loop.state.epoch, sorted(NAMES[e] for e in events)])
        batches.append(batch.tolist() if real else None)
        sums.append(float(value[0]))
        if loop.state.step == until_step:
            break
    return {
        "steps": steps,
        "batches": batches,
        "sums": sums,
        "epoch_length": loop.state.epoch_length,
        "state": loop.state_dict(),
    }


def main() -> None:
    scenario, rank_text, world_size, port, output = sys.argv[1:]
    rank = int(rank_text)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=int(world_size),
        timeout=timedelta(seconds=30),
    )
    report: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LoopWarning)
        try:
            if scenario in ("map-resume", "map-resume-own"):
                first = run(make_loop("map", rank), until_step=8)
                saved: list[Any] = [first["state"]]
                if scenario == "map-resume":
                    dist.broadcast_object_list(saved, src=0)  # rank 0's state, to every rank
                resumed = make_loop("map", rank)
                resumed.load_state_dict(saved[0])
                report = {"first": first, "rest": run(resumed), "full": run(make_loop("map", rank))}
            else:
                report = run(make_loop(scenario, rank))
        finally:
            dist.destroy_process_group()
    report["warnings"] = [str(warning.message) for warning in caught]
    Path(output).write_text(json.dumps(report))


if __name__ == "__main__":
    main()
