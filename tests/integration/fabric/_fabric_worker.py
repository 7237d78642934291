"""One of two Fabric DDP processes (gloo, CPU), started by test_fabric_processes.py with
the environment Fabric reads (LOCAL_RANK, NODE_RANK, WORLD_SIZE, MASTER_ADDR/PORT).

Usage: _fabric_worker.py SAMPLER CUT CHECKPOINT OUTPUT. Runs the uninterrupted training,
then a run stopped after step CUT (saved with ``fabric.save``), resumed with
``fabric.load``, and the same without the loop in the checkpoint; writes the steps,
weights and lengths this process saw to OUTPUT as JSON.

Usage: _fabric_worker.py agreement OUTPUT. Runs ``_fabric_runs.agreement`` of every kind
and writes the steps and events this process saw to OUTPUT as JSON.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
from _fabric_runs import AGREEMENT, agreement, train
from lightning_fabric import Fabric


def main() -> None:
    warnings.simplefilter("error")
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
    fabric.launch()  # the processes were started outside: this joins the process group
    try:
        run(fabric)
    finally:
        # Left to the process's exit, gloo's threads can abort the interpreter.
        torch.distributed.destroy_process_group()


def run(fabric: Fabric) -> None:
    if sys.argv[1] == "agreement":
        steps = {kind: agreement(fabric, kind) for kind in AGREEMENT}
        Path(sys.argv[2]).write_text(json.dumps({"rank": fabric.global_rank, **steps}))
        fabric.barrier()
        return
    sampler, cut, checkpoint, output = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    full, full_weights, full_length = train(fabric, sampler)
    first, _, _ = train(fabric, sampler, stop_after=cut, checkpoint=checkpoint)
    rest, rest_weights, rest_length = train(fabric, sampler, checkpoint=checkpoint, resume=True)
    bare = checkpoint.with_suffix(".bare")
    train(fabric, sampler, stop_after=cut, checkpoint=bare, with_loop=False)
    without_loop, _, _ = train(fabric, sampler, checkpoint=bare, resume=True, with_loop=False)
    report = {
        "rank": fabric.global_rank,
        "full": full,
        "full_weights": full_weights,
        "full_length": full_length,
        "first": first,
        "rest": rest,
        "rest_weights": rest_weights,
        "rest_length": rest_length,
        "without_loop": without_loop,
    }
    Path(output).write_text(json.dumps(report))
    fabric.barrier()


if __name__ == "__main__":
    main()
