"""Every link to the project's repository or site points where mkdocs.yml says they are.

The package pages, the site and the examples' docs link to one repository; a page left
pointing at another owner sends users to a 404 (two tool pages once did).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# github.com/<owner>/dloop or <owner>.github.io/dloop, whoever the owner is
PROJECT_LINK = re.compile(
    r"https?://(?:github\.com/(?P<owner>[\w.-]+)/dloop(?![\w-])|(?P<pages>[\w.-]+)\.github\.io/dloop(?![\w-]))"
)


def mkdocs_setting(name: str) -> str:
    found = re.search(rf"^{name}:\s*(\S+)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert found is not None, f"mkdocs.yml has no {name}"
    return found.group(1)


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md", "*.toml", "*.yml", "*.py", "*.cfg", "*.ini", "*.html"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed]


def owners(text: str) -> set[str]:
    return {match.group("owner") or match.group("pages") for match in PROJECT_LINK.finditer(text)}


def test_the_pattern_finds_both_kinds_of_link() -> None:
    text = "see https://github.com/someone/dloop/blob/main/x.py and https://other.github.io/dloop/"
    assert owners(text) == {"someone", "other"}
    assert owners("https://github.com/someone/dloop-torch-extras") == set()


def test_every_project_link_names_the_repository_of_mkdocs_yml() -> None:
    repo_url = mkdocs_setting("repo_url")
    site_url = mkdocs_setting("site_url")
    owner = repo_url.rstrip("/").split("/")[-2]
    assert site_url.startswith(f"https://{owner}.github.io/dloop")
    files = tracked_text_files()
    assert any(path.name == "README.md" for path in files)
    strays = {
        f"{path.relative_to(ROOT)}: {other}"
        for path in files
        if path != Path(__file__).resolve()  # this file's own examples of other owners
        for other in owners(path.read_text(errors="replace"))
        if other != owner
    }
    assert not strays, f"links to another owner than {owner}: {sorted(strays)}"
