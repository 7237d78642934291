"""Run the core's tests on every supported CPython against the wheels in dist/.

For each of Python 3.10 to 3.13 found on this machine (``python3.X`` on PATH, or a pyenv
installation), in a fresh virtual environment and from outside the source tree:

1. ``pip install --no-index --find-links dist dloop``, as a user's pip would choose: the
   compiled wheel where its tag fits the interpreter (every version for a ``cp310-abi3``
   wheel, one version otherwise), else the pure-Python wheel. The choice is checked against
   that expectation, the files against the wheel (``tools/check_installed.py``), then
   ``tests/core`` runs.
2. Where pip chose the compiled wheel, the same again with the pure-Python wheel.

An interpreter that is not found is reported as SKIPPED, by name, in the summary; a
failure anywhere makes the script exit 1. ``--require-all`` turns a missing interpreter
into a failure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
VERSIONS = ("3.10", "3.11", "3.12", "3.13")
COMPILED = re.compile(r"dloop-[^-]+-(cp3\d+)-(cp3\d+|abi3)-[^-]+\.whl")


def find_python(version: str) -> Path | None:
    """An interpreter that really is CPython ``version`` (pyenv shims may only pretend),
    preferring an installation to a virtual environment's copy of one."""
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [
        str(path)
        for path in sorted((pyenv_root / "versions").glob(f"{version}.*/bin/python{version}"))
    ]
    probe = (
        "import sys; print('%d.%d' % sys.version_info[:2], sys.implementation.name, "
        "sys.prefix == sys.base_prefix)"
    )
    found: list[tuple[bool, Path]] = []
    for candidate in candidates:
        if candidate is None:
            continue
        result = subprocess.run(
            [candidate, "-c", probe], capture_output=True, text=True, check=False
        )
        words = result.stdout.split()
        if result.returncode == 0 and words[:2] == [version, "cpython"]:
            found.append((words[2] == "True", Path(candidate)))
    found.sort(key=lambda item: not item[0])  # installations first
    return found[0][1] if found else None


def compiled_fits(version: str) -> bool:
    """Whether pip on CPython ``version`` should pick dist/'s compiled wheel."""
    (wheel,) = (w for w in DIST.glob("dloop-*.whl") if COMPILED.fullmatch(w.name))
    found = COMPILED.fullmatch(wheel.name)
    assert found is not None
    python, abi = found.groups()
    if abi == "abi3":
        return int(version.split(".")[1]) >= int(python[3:])
    return python == "cp" + version.replace(".", "")


def run(command: list[str | Path], *, cwd: Path, env: dict[str, str]) -> tuple[bool, str]:
    """Run ``command``; return whether it succeeded and its last non-empty output line."""
    print("+", " ".join(str(part) for part in command), flush=True)
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        print(output)
    lines = [line.strip("= ") for line in output.splitlines() if line.strip()]
    return result.returncode == 0, lines[-1] if lines else ""


def test_wheel(python: Path, version: str, venv: Path, *, pure: bool) -> tuple[bool, str]:
    """Install one dloop wheel into ``venv`` and run tests/core against it."""
    env = {**os.environ, "DLOOP_EXPECT_SPEEDUPS": "0" if pure else "1"}
    env.pop("DLOOP_PURE_PYTHON", None)
    bin_python = venv / "bin" / "python"
    pip: list[str | Path] = [bin_python, "-I", "-m", "pip", "--quiet"]
    (pure_wheel,) = DIST.glob("dloop-*-py3-none-any.whl")
    source: list[str | Path] = (
        [pure_wheel] if pure and compiled_fits(version) else ["--find-links", DIST, "dloop==0.2.0"]
    )
    steps: list[list[str | Path]] = [
        [*pip, "uninstall", "--yes", "dloop"],
        [*pip, "install", "--no-index", "--no-deps", *source],
        [
            bin_python,
            ROOT / "tools" / "check_installed.py",
            "--dist",
            DIST,
            "--pure" if pure else "--compiled",
            "dloop",
        ],
        [bin_python, "-m", "pytest", ROOT / "tests" / "core", "-p", "no:cacheprovider", "-q"],
    ]
    last = ""
    for step in steps:
        ok, last = run(step, cwd=venv, env=env)
        if not ok:
            return False, last
    return True, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-all", action="store_true", help="a missing Python fails")
    args = parser.parse_args()
    if not any(DIST.glob("dloop-*.whl")):
        print("dist/ has no dloop wheels: run `tox -e release` first", file=sys.stderr)
        return 1

    summary: list[tuple[str, str, str]] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="dloop-pythons-") as tmp:
        for version in VERSIONS:
            python = find_python(version)
            if python is None:
                summary.append((version, "-", "SKIPPED: no CPython interpreter found"))
                failed = failed or args.require_all
                continue
            venv = Path(tmp) / version
            env = dict(os.environ)
            ok, last = run([python, "-m", "venv", venv], cwd=Path(tmp), env=env)
            if ok:
                ok, last = run(
                    [
                        venv / "bin" / "python",
                        "-I",
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "pytest>=8",
                        "hypothesis>=6.100",
                    ],
                    cwd=venv,
                    env=env,
                )
            if not ok:
                summary.append((f"{version} ({python})", "-", f"FAILED to set up: {last}"))
                failed = True
                continue
            fits = compiled_fits(version)
            for pure in [False, True] if fits else [True]:
                kind = "pure py3-none-any" if pure else "compiled"
                if pure and not fits:
                    kind += " (pip's choice)"
                ok, last = test_wheel(python, version, venv, pure=pure)
                summary.append(
                    (f"{version} ({python})", kind, ("ok: " if ok else "FAILED: ") + last)
                )
                failed = failed or not ok

    print("\nThe core's tests on each CPython, against dist/'s wheels:")
    for python_label, kind, result in summary:
        print(f"  {python_label:50} {kind:32} {result}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
