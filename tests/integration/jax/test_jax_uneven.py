"""Rule 28 across two real JAX processes: unequal data (10 and 7 batches per epoch) with
a cross-process collective in every step finishes with identical traces; with
``uneven="longest"`` the shorter process pads and every sample counts once."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jax_processes import free_port, run_script

from dloop import Loop, LoopWarning
from dloop.testing import ThreadSync
from dloop_jax import prefetch_to_device


def run(uneven: str, tmp_path: Path) -> list[dict[str, Any]]:
    port = str(free_port())
    return run_script(
        "worker_uneven.py",
        [[uneven, "0", port], [uneven, "1", port]],
        cpu_devices=1,
        tmp_path=tmp_path,
    )


@pytest.mark.slow
def test_unequal_data_ends_every_epoch_where_the_shorter_one_ends(tmp_path: Path) -> None:
    first, second = run("shortest", tmp_path)
    assert first["steps"] == second["steps"]
    assert [s for s, _, events in first["steps"] if "EPOCH_END" in events] == [6, 13]
    assert "TRAINING_END" in first["steps"][-1][2]
    assert first["gathered"] == second["gathered"]
    assert [batch[0] for batch in second["batches"]] == [1000 + 2 * i for i in range(7)] * 2
    assert len([m for m in first["warnings"] if "leaves" in m]) == 2
    assert second["warnings"] == []


@pytest.mark.slow
def test_longest_pads_and_every_sample_counts_once(tmp_path: Path) -> None:
    first, second = run("longest", tmp_path)

    def plain(steps: list[Any]) -> list[Any]:
        return [[s, e, [x for x in events if x != "PADDING"]] for s, e, events in steps]

    assert plain(first["steps"]) == plain(second["steps"])
    assert len(first["steps"]) == 20
    assert second["batches"].count(None) == 6
    assert [events for *_, events in second["steps"]].count(["PADDING"]) == 4
    epoch = [b for report in (first, second) for b in report["batches"][:10] if b is not None]
    samples = sorted(value for batch in epoch for value in batch)
    assert samples == sorted([*range(20), *range(1000, 1014)])


def test_prefetch_over_uneven_streams_resumes_without_losing_or_repeating_a_batch() -> None:
    """Device prefetch reads ahead of the agreed end; a resume over fresh streams still
    gives exactly the batches the uninterrupted run would have (threads as processes)."""
    lengths = (10, 7)

    def stream(rank: int) -> Any:
        arrays = (np.full(2, 100 * rank + index, np.float32) for index in range(lengths[rank]))
        return prefetch_to_device(arrays, size=2)

    def run(states: list[Any] | None, until: int | None) -> list[Any]:
        sync = ThreadSync(2, every_n_steps=3, timeout=20)
        out: list[Any] = [None, None]

        def work(rank: int) -> None:
            loop = Loop(stream(rank), max_steps=100, epoch_length=4, sync=sync)
            if states is not None:
                loop.load_state_dict(states[0])  # rank 0's state, on both
            seen = []
            for batch, _ in loop:
                seen.append((loop.state.step, float(np.asarray(batch)[0])))
                if loop.state.step == until:
                    break
            out[rank] = (seen, json.loads(json.dumps(loop.state_dict())))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LoopWarning)
            threads = [threading.Thread(target=work, args=(rank,)) for rank in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
        assert all(item is not None for item in out), "a process hung or failed"
        return out

    full = run(None, None)
    assert [step for step, _ in full[0][0]] == list(range(7))
    for cut in range(6):
        first = run(None, cut)
        rest = run([first[0][1]], None)
        for rank in (0, 1):
            assert first[rank][0] + rest[rank][0] == full[rank][0], (cut, rank)


def test_each_process_resumed_inside_the_padding_finishes_as_the_uninterrupted_run() -> None:
    """``uneven="longest"`` over unsized data per process (10 and 7 batches), resumed at
    every step from each process's own state dict, padding steps included: the process
    whose data ended before the resumed step gets an empty pass and pads (threads as
    processes)."""
    lengths = (10, 7)

    class Unsized:  # re-iterable, no len
        def __init__(self, rank: int) -> None:
            self.rank = rank

        def __iter__(self) -> Any:
            first = 100 * self.rank
            return (np.full(2, first + i, np.float32) for i in range(lengths[self.rank]))

    def run(states: list[Any] | None, until: int | None) -> list[Any]:
        sync = ThreadSync(2, every_n_steps=4, timeout=20)
        out: list[Any] = [None, None]

        def work(rank: int) -> None:
            loop = Loop(
                prefetch_to_device(Unsized(rank)), max_epochs=1, sync=sync, uneven="longest"
            )
            if states is not None:
                loop.load_state_dict(states[rank])  # this process's own
            seen = []
            for batch, events in loop:
                value = None if batch is None else float(np.asarray(batch)[0])
                seen.append((loop.state.step, sorted(str(e) for e in events), value))
                if loop.state.step == until:
                    break
            out[rank] = (seen, json.loads(json.dumps(loop.state_dict())))

        threads = [threading.Thread(target=work, args=(rank,)) for rank in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert all(item is not None for item in out), "a process hung or failed"
        return out

    full = run(None, None)
    assert [
        (step, value) for step, events, value in full[1][0] if "LoopEvents.PADDING" in events
    ] == [
        (7, None),
        (8, None),
        (9, None),
    ]
    for cut in range(9):
        first = run(None, cut)
        rest = run([first[0][1], first[1][1]], None)
        for rank in (0, 1):
            assert first[rank][0] + rest[rank][0] == full[rank][0], (cut, rank)
