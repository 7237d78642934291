"""Build what a release uploads into dist/, repair it, and check it (``tox -e release``).

For each distribution (dloop, dloop-torch, dloop-jax) this builds an sdist and, from that
sdist, a wheel, so a file missing from an sdist breaks the build here and not on a user's
machine. The core gets two wheels: the C-accelerated one, repaired by auditwheel to a
manylinux tag that the package index accepts, and a pure-Python ``py3-none-any`` one
(``DLOOP_BUILD_PURE=1``) that PyPy and platforms without a compiled wheel install instead
of building from the sdist. Then ``twine check --strict`` and ``tools/check_dist.py`` look
at every file. dist/ ends up holding exactly what would be uploaded.

The compiled wheel is built for the interpreter that runs this script. When the extension
targets the stable ABI (``_speedups.abi3.so``) one ``cp310-abi3`` wheel serves CPython 3.10
and later; otherwise the wheel is for this CPython only, and the other versions install the
pure wheel. Wheels for macOS, Windows and other Linux architectures need those machines
(cibuildwheel on a CI service); this script builds the Linux x86_64 ones it can.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
PACKAGES = ("dloop-core", "dloop-torch", "dloop-jax")
# Left out of the copy each build starts from: what earlier builds, editable installs and
# test runs leave in a checkout.
LEFT_OUT = shutil.ignore_patterns(
    "build", "dist", "*.egg-info", "__pycache__", "*.pyc", "*.so", "*.pyd", ".*"
)


def run(*command: str | Path, env: dict[str, str] | None = None) -> None:
    """Run a command, showing it first; a failure ends the release build."""
    print("+", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True, env=env)


def linker_without_rpath() -> str:
    """The interpreter's link command for extensions, less any ``-rpath``.

    An interpreter built with a run-time library path (pyenv's are) passes it to every
    extension it builds; the accelerator links to nothing but the interpreter, and a path
    of the build machine has no place in a published wheel.
    """
    command = shlex.split(str(sysconfig.get_config_var("LDSHARED") or "cc -shared"))
    return shlex.join(part for part in command if not part.startswith(("-Wl,-rpath", "-Wl,-R")))


def build(source: Path, outdir: Path, *, wheel_only: bool = False, pure: bool = False) -> None:
    """Build ``source`` with ``python -m build``: an sdist and a wheel from that sdist."""
    env = {
        **os.environ,
        "DLOOP_BUILD_PURE": "1" if pure else "0",
        "LDSHARED": linker_without_rpath(),
    }
    flags = ("--wheel",) if wheel_only else ()
    run(sys.executable, "-m", "build", *flags, "--outdir", outdir, source, env=env)


def main() -> int:
    if not sys.platform.startswith("linux"):
        print(
            "tox -e release repairs Linux wheels with auditwheel; on other platforms build "
            "wheels with cibuildwheel",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(DIST, ignore_errors=True)
    DIST.mkdir()
    with tempfile.TemporaryDirectory(prefix="dloop-release-") as tmp:
        work = Path(tmp)
        raw = work / "raw"
        for package in PACKAGES:
            staged = work / "src" / package
            shutil.copytree(ROOT / "packages" / package, staged, ignore=LEFT_OUT)
            build(staged, raw)

        (core_sdist,) = raw.glob("dloop-*.tar.gz")
        with tarfile.open(core_sdist) as archive:
            if hasattr(tarfile, "data_filter"):  # Python 3.10.12, 3.11.4 and later
                archive.extractall(work / "pure", filter="data")
            else:  # our own sdist, just built
                archive.extractall(work / "pure")
        (unpacked,) = (work / "pure").iterdir()
        build(unpacked, raw / "pure", wheel_only=True, pure=True)

        compiled = [
            wheel for wheel in raw.glob("dloop-*.whl") if not wheel.name.endswith("-any.whl")
        ]
        if len(compiled) != 1:
            print(
                f"expected one compiled dloop wheel, got {[w.name for w in compiled]}: is a C "
                "compiler and Python.h (python3-dev) installed?",
                file=sys.stderr,
            )
            return 1
        # --plat names the family (glibc): an extension that calls no C library function,
        # as a stable-ABI one may, gives auditwheel nothing to detect it from. auditwheel
        # still tags the wheel with the oldest manylinux it satisfies.
        run(
            "auditwheel",
            "repair",
            "--plat",
            "manylinux_2_17_x86_64",
            "--wheel-dir",
            DIST,
            compiled[0],
        )

        for artefact in [*raw.glob("*.tar.gz"), *raw.glob("*-any.whl"), *raw.glob("pure/*.whl")]:
            shutil.copy2(artefact, DIST)

    artefacts = sorted(DIST.iterdir())
    run("twine", "check", "--strict", *artefacts)
    run(sys.executable, ROOT / "tools" / "check_dist.py", DIST)
    print("\ndist/ holds what a release uploads:")
    for artefact in artefacts:
        print(f"  {artefact.name}  ({artefact.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
