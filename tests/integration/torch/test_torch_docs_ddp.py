"""The PyTorch page's DDP example (docs/frameworks/pytorch.md, "Many processes (DDP)")
runs as printed under torchrun on two CPU processes, saves one state dict per process,
and ends cleanly: no gloo thread outlives it (one left running at exit can abort the
process); run again, it resumes after its last step."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[3] / "docs" / "frameworks" / "pytorch.md"
# Appended to the example: each process writes the names of its threads once it is done.
THREADS_AT_THE_END = """
Path(f"threads-{rank}.txt").write_text(" ".join(
    open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")
))
"""


def ddp_example() -> str:
    section = PAGE.read_text().split("## Many processes (DDP)", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the DDP section has no python block"
    return block.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def torchrun(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node=2",
            "--master-addr=127.0.0.1",
            f"--master-port={free_port()}",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=script.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_the_pytorch_pages_ddp_example_runs_on_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(ddp_example() + THREADS_AT_THE_END)

    first = torchrun(script)
    assert first.returncode == 0, first.stderr
    ends = [(tmp_path / f"threads-{rank}.txt").read_text() for rank in (0, 1)]
    assert all("gloo" not in threads for threads in ends), ends  # the group is gone
    # 1,024 samples, two processes, batches of 32: 16 steps an epoch, 4 epochs.
    for rank in (0, 1):
        state = json.loads((tmp_path / f"checkpoint-rank{rank}.json").read_text())
        assert (state["step"], state["epoch"], state["finished"]) == (63, 3, True)
    assert (tmp_path / "checkpoint.pt").exists()

    saved = (tmp_path / "checkpoint-rank0.json").read_text()
    again = torchrun(script)  # resumes after the last step: nothing left to train or save
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "checkpoint-rank0.json").read_text() == saved
