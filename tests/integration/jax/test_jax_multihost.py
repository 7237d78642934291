"""``MultihostSync`` across two real JAX processes (``jax.distributed`` on 127.0.0.1 with
gloo CPU collectives), and on its own in one process.

The two processes run the same loops with manual clocks that tick at different rates;
``worker_multihost.py`` is what each of them runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jax.experimental import multihost_utils
from jax_processes import free_port, run_script
from worker_multihost import (
    EVERY_N_STEPS,
    LARGE_FLAGS,
    LOCAL_ROWS,
    STOP_STEP,
    local_batches,
    stopped_run,
    traced_run,
)

import dloop
from dloop import Loop
from dloop_jax import MultihostSync
from dloop_jax._multihost_sync import join_halves, split_halves


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp_path: Path = tmp_path_factory.mktemp("multihost")
    port = str(free_port())
    return run_script(
        "worker_multihost.py", [["0", port], ["1", port]], cpu_devices=2, tmp_path=tmp_path
    )


def as_trace(report: Sequence[Sequence[Any]]) -> list[tuple[int, list[str]]]:
    return [(int(step), list(names)) for step, names in report]


@pytest.mark.slow
def test_both_processes_joined_one_job(reports: list[dict[str, Any]]) -> None:
    assert [report["process_count"] for report in reports] == [2, 2]


@pytest.mark.slow
def test_diverging_clocks_yield_identical_event_traces(reports: list[dict[str, Any]]) -> None:
    first, second = (as_trace(report["trace"]) for report in reports)
    assert first == second
    fired = {name for _, names in first for name in names}
    assert {"EverySecond", "AtTime", "TRAINING_END"} <= fired
    # The clocks do diverge: alone, the two processes would fire on different steps.
    assert traced_run(0, sync=None) != traced_run(1, sync=None)


@pytest.mark.slow
def test_time_events_fire_only_on_agreement_steps(reports: list[dict[str, Any]]) -> None:
    for step, names in as_trace(reports[0]["trace"]):
        if {"EverySecond", "AtTime", "TRAINING_END"} & set(names):
            assert (step + 1) % EVERY_N_STEPS == 0, (step, names)


@pytest.mark.slow
def test_one_collective_per_agreement_step(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        steps = len(report["trace"])
        # Every agreement step (and any agreement the core adds on where the data ends)
        # is one combine, and each combine one collective.
        assert report["collectives"] == report["combines"] >= steps // EVERY_N_STEPS


@pytest.mark.slow
def test_a_stop_requested_in_one_process_ends_both_on_the_same_step(
    reports: list[dict[str, Any]],
) -> None:
    first, second = (as_trace(report["stopped"]) for report in reports)
    assert first == second
    last_step, last_events = first[-1]
    # Requested in the body of step 9 of process 1; agreed at the next agreement step.
    assert last_step == (STOP_STEP // EVERY_N_STEPS + 1) * EVERY_N_STEPS - 1
    assert set(last_events) >= {"TRAINING_END", "INTERRUPTED"}
    for report in reports:
        assert report["last_steps_of_both"] == [last_step, last_step]
    # Alone, process 0 would not have stopped at all.
    assert len(stopped_run(0, sync=None)) == 1000


@pytest.mark.slow
def test_combine_is_exact_for_values_beyond_32_bits(reports: list[dict[str, Any]]) -> None:
    expected = [max(column) for column in zip(*LARGE_FLAGS, strict=True)]
    assert expected[0] > 2**31
    for report in reports:
        assert report["large"] == expected


@pytest.mark.slow
def test_each_process_contributes_its_local_part_of_the_global_batch(
    reports: list[dict[str, Any]],
) -> None:
    for report in reports:
        assert len(report["prefetch"]) == 3
        for index, batch in enumerate(report["prefetch"]):
            assert batch["global_shape"] == [2 * LOCAL_ROWS, 3]
            assert batch["carries_sharding"]
            assert batch["addressable_devices"] == 2
            assert batch["own_rows_are_local_batch"]
            expected = sum(float(local_batches(pid)[index].sum()) for pid in (0, 1))
            assert batch["global_sum"] == pytest.approx(expected)


def test_one_process_combines_without_a_collective(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_collective(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a single process must not run a collective")

    monkeypatch.setattr(multihost_utils, "process_allgather", no_collective)
    sync = MultihostSync(every_n_steps=3)
    assert sync.combine([1, 2**61 + 3, 0]) == (1, 2**61 + 3, 0)
    loop = Loop(range(10), max_steps=9, sync=sync)
    assert len(list(loop)) == 9


def test_it_is_a_dloop_sync() -> None:
    sync = MultihostSync(every_n_steps=5)
    assert isinstance(sync, dloop.Sync)
    assert sync.every_n_steps == 5
    assert repr(sync) == "MultihostSync(every_n_steps=5)"


@pytest.mark.parametrize("value", [0, 1, 2**31 - 1, 2**31, 2**32 + 1, 2**62 - 1])
def test_halves_hold_every_value_below_2_62_exactly(value: int) -> None:
    halves = split_halves([value, 7])
    assert halves.dtype == np.int32
    assert (halves >= 0).all()
    assert join_halves(halves).tolist() == [value, 7]


def test_the_maximum_of_halves_is_the_maximum_of_the_values() -> None:
    # The high halves decide first: 2**31 beats 2**31 - 1 although its low half is 0.
    gathered = np.stack([split_halves([2**31 - 1, 5]), split_halves([2**31, 4])])
    assert join_halves(gathered).max(axis=0).tolist() == [2**31, 5]


@pytest.mark.parametrize("every_n_steps", [0, -3])
def test_every_n_steps_below_one_is_refused(every_n_steps: int) -> None:
    with pytest.raises(
        ValueError, match=rf"every_n_steps must be an int >= 1.*, got {every_n_steps}"
    ):
        MultihostSync(every_n_steps=every_n_steps)


@pytest.mark.parametrize("every_n_steps", [True, 2.0, "4"])
def test_every_n_steps_that_is_not_an_int_is_refused(every_n_steps: Any) -> None:
    with pytest.raises(TypeError, match="every_n_steps must be an int >= 1"):
        MultihostSync(every_n_steps=every_n_steps)


@pytest.mark.parametrize("flag", [-1, 2**62])
def test_flags_out_of_range_are_refused(flag: int) -> None:
    with pytest.raises(
        ValueError, match=rf"flags\[1\] must be an int in \[0, 2\*\*62\), got {flag}"
    ):
        MultihostSync(every_n_steps=1).combine([0, flag])


@pytest.mark.parametrize("flag", [1.5, True, "3"])
def test_flags_that_are_not_ints_are_refused(flag: Any) -> None:
    with pytest.raises(TypeError, match=r"flags\[0\] must be an int"):
        MultihostSync(every_n_steps=1).combine([flag])
