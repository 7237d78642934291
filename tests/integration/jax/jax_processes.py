"""Run helper scripts of these tests in fresh Python processes, failing instead of hanging."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
TIMEOUT_SECONDS = 180.0


def environment(*, cpu_devices: int) -> dict[str, str]:
    """This process's environment, with JAX on the CPU showing ``cpu_devices`` devices."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={cpu_devices}"
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_script(
    script: str, arguments: list[list[str]], *, cpu_devices: int, tmp_path: Path
) -> list[Any]:
    """Run ``script`` once per argument list, all at the same time, and return the JSON
    report each one writes to the path given as its last argument.

    Fails the test when any process exits with an error or when they are not all done
    within ``TIMEOUT_SECONDS`` (then every process is killed).
    """
    env = environment(cpu_devices=cpu_devices)
    reports = [tmp_path / f"report-{index}.json" for index in range(len(arguments))]
    processes = [
        subprocess.Popen(
            [sys.executable, str(HERE / script), *args, str(report)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args, report in zip(arguments, reports, strict=True)
    ]
    deadline = time.monotonic() + TIMEOUT_SECONDS
    outputs = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
            outputs.append(output)
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        for process in processes:
            process.communicate()
        pytest.fail(f"{script} {arguments} did not finish within {TIMEOUT_SECONDS} s")
    failed = [
        f"process {index} exited with {process.returncode}:\n{output}"
        for index, (process, output) in enumerate(zip(processes, outputs, strict=True))
        if process.returncode != 0
    ]
    if failed:
        pytest.fail(f"{script} failed:\n" + "\n".join(failed))
    return [json.loads(report.read_text()) for report in reports]
