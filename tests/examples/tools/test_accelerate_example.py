"""examples/accelerate_train.py trains on one CPU process and on two (torchrun, gloo), and
a run cut short and resumed from its ``save_state`` directory ends like one run."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "accelerate_train.py"
TIME_LIMIT = 300

# Runs the example with a save_state that writes the first bytes of one file and then
# dies, as a job killed (preempted, out of memory) in the middle of a save would.
KILLED_WHILE_SAVING = """
import os, runpy, sys
from accelerate import Accelerator

def save_state(self, output_dir=None, **kwargs):
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "model.safetensors"), "wb") as file:
        file.write(b"the first bytes of a checkpoint")
    os._exit(9)

Accelerator.save_state = save_state
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run(command: list[str], cwd: Path, *, returncode: int = 0) -> str:
    """Run ``command`` on the CPU; return its standard output, failing unless it exits
    with ``returncode``."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
        check=False,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == returncode, result.stderr
    return result.stdout


def validation_errors(output: str) -> tuple[float, float]:
    """The validation mse before and after this run, from the last line."""
    found = re.search(r"validation mse ([\d.]+) -> ([\d.]+)$", output.strip())
    assert found is not None, output
    return float(found[1]), float(found[2])


def epoch_lines(output: str) -> list[str]:
    """The validation line of every epoch end."""
    return re.findall(r"^epoch \d done  validation mse [\d.]+$", output, re.MULTILINE)


def cut_short(checkpoint: str, cwd: Path) -> str:
    """Run the example with checkpoints in ``checkpoint`` until its update at step 99."""
    command = [sys.executable, str(EXAMPLE), "--checkpoint", checkpoint]
    return run([*command, "--stop-after-steps", "98"], cwd=cwd)


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The output of one uninterrupted run on one process."""
    return run([sys.executable, str(EXAMPLE)], cwd=tmp_path_factory.mktemp("one-run"))


@pytest.mark.slow
def test_the_accelerate_example_trains_on_one_process(one_run: str) -> None:
    output = one_run

    assert "training on cpu, 1 process(es): 256 steps to go, 4 epochs x 64 batches" in output
    assert [line.split()[1] for line in epoch_lines(output)] == ["0", "1", "2", "3"]
    logged = re.findall(r"^step +(\d+) +epoch \d +loss", output, re.MULTILINE)
    assert {"63", "127", "191", "255"} <= set(logged)
    before, after = validation_errors(output)
    assert after < 0.05 * before


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_the_accelerate_example_trains_on_two_processes(tmp_path: Path) -> None:
    # Runs the example, then writes the names of the process's threads: a gloo thread
    # still running after main() can abort the finished process at exit.
    wrapper = tmp_path / "run_example.py"
    wrapper.write_text(
        "import os, runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "tasks = os.listdir('/proc/self/task')\n"
        "names = [open(f'/proc/self/task/{task}/comm').read().strip() for task in tasks]\n"
        "open(f\"threads-{os.environ['RANK']}.txt\", 'w').write(' '.join(names))\n"
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        str(wrapper),
        str(EXAMPLE),
    ]
    output = run(command, cwd=tmp_path)
    ends = [(tmp_path / f"threads-{rank}.txt").read_text() for rank in (0, 1)]
    assert all("gloo" not in threads for threads in ends), ends  # the process group is gone

    # Rank 0 alone prints: each line once.
    assert "training on cpu, 2 process(es): 128 steps to go, 4 epochs x 32 batches" in output
    assert [line.split()[1] for line in epoch_lines(output)] == ["0", "1", "2", "3"]
    before, after = validation_errors(output)
    assert after < 0.1 * before


@pytest.mark.slow
def test_the_accelerate_example_resumed_from_save_state_ends_like_one_run(
    tmp_path: Path, one_run: str
) -> None:
    checkpoint = str(tmp_path / "state")
    cut = cut_short(checkpoint, cwd=tmp_path)
    # One folder, and the file that names it.
    assert sorted(path.name for path in Path(checkpoint).iterdir()) == ["latest", "step-000099"]
    resumed = run([sys.executable, str(EXAMPLE), "--checkpoint", checkpoint], cwd=tmp_path)

    assert "stopped after step 99" in cut  # the first optimizer step from step 98 on
    assert "resumed from" in resumed
    assert "after step 99" in resumed
    assert "156 steps to go" in resumed
    assert epoch_lines(cut) + epoch_lines(resumed) == epoch_lines(one_run)
    assert validation_errors(resumed)[1] == validation_errors(one_run)[1]


@pytest.mark.slow
def test_a_run_killed_while_saving_resumes_from_the_checkpoint_before(
    tmp_path: Path, one_run: str
) -> None:
    checkpoint = str(tmp_path / "state")
    cut = cut_short(checkpoint, cwd=tmp_path)
    # Resumes, trains on, and dies in the save at step 151.
    command = [sys.executable, "-c", KILLED_WHILE_SAVING, str(EXAMPLE), "--checkpoint", checkpoint]
    run([*command, "--stop-after-steps", "150"], cwd=tmp_path, returncode=9)
    resumed = run([sys.executable, str(EXAMPLE), "--checkpoint", checkpoint], cwd=tmp_path)

    assert "after step 99" in resumed
    assert epoch_lines(cut) + epoch_lines(resumed) == epoch_lines(one_run)
    assert validation_errors(resumed)[1] == validation_errors(one_run)[1]
