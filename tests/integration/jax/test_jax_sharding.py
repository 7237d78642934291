"""With a ``NamedSharding`` over a mesh of 4 CPU devices (set up in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``), every prefetched array carries
the requested sharding, split along the batch axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jax_processes import run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp_path: Path = tmp_path_factory.mktemp("sharding")
    (result,) = run_script("worker_sharding.py", [[]], cpu_devices=4, tmp_path=tmp_path)
    assert isinstance(result, dict)
    return result


def test_the_process_sees_four_devices(report: dict[str, Any]) -> None:
    assert report["device_count"] == 4


def test_arrays_carry_the_requested_sharding_over_a_one_axis_mesh(
    report: dict[str, Any],
) -> None:
    steps = report["one_axis"]["steps"]
    assert len(steps) == 6
    for step in steps:
        assert step["carries_sharding"] == [True, True]
        assert step["devices"] == [4, 4]
        # 8 rows over 4 devices: 2 rows per shard, for x (8, 3) and y (8,).
        assert step["shard_shapes"] == [[[2, 3]], [[2]]]


def test_over_a_two_axis_mesh_the_batch_is_split_on_data_and_replicated_on_model(
    report: dict[str, Any],
) -> None:
    assert report["two_axes"]["mesh_shape"] == [2, 2]
    for step in report["two_axes"]["steps"]:
        assert step["carries_sharding"] == [True, True]
        assert step["devices"] == [4, 4]
        assert step["shard_shapes"] == [[[4, 3]], [[4]]]


@pytest.mark.parametrize("mesh", ["one_axis", "two_axes"])
def test_sharded_batches_hold_the_host_values_and_feed_a_jitted_step(
    report: dict[str, Any], mesh: str
) -> None:
    steps = report[mesh]["steps"]
    assert [step["epoch_end"] for step in steps] == [False, False, True] * 2
    for step in steps:
        assert step["equal_to_host"]
        assert step["step_result"] == pytest.approx(step["host_result"], rel=1e-5)
