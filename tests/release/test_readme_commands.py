"""The README's two newcomer commands stand alone, and CI runs command 2 as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it: two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the README's two commands are not in a bash block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_the_readme_has_two_commands_that_need_no_activated_environment() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    for command in commands:
        assert "activate" not in command  # each line works in a fresh shell
        assert not re.search(r"(^|&& )pip ", command), "a bare pip would reach the system Python"
        assert command.startswith("python3 -m venv ")


def test_ci_runs_the_readmes_test_command_as_written() -> None:
    run = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in run
