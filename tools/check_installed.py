"""Prove that the dloop packages this interpreter imports are the wheels in a dist/ folder.

``python tools/check_installed.py --dist dist --compiled dloop dloop-torch`` checks, for
each distribution named, that it is installed as a regular (not editable) package outside
the source tree, that every file of the chosen wheel is installed with the wheel's hash, and
for ``dloop`` that the C accelerator is there (``--compiled``) or absent (``--pure``). The
installed-wheel test environments run it before their tests, so that a test run against the
checkout, or against a dloop from elsewhere on the index, cannot pass for a test of dist/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import importlib.metadata
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def wheel_for(dist_dir: Path, name: str, *, pure: bool) -> Path:
    """The wheel in ``dist_dir`` that pip should have installed for ``name``."""
    stem = name.replace("-", "_")
    wheels = [w for w in dist_dir.glob(f"{stem}-*.whl") if w.name.endswith("-any.whl") == pure]
    if len(wheels) != 1:
        kind = "pure-Python" if pure else "compiled"
        raise SystemExit(f"expected one {kind} {name} wheel in {dist_dir}, found {wheels}")
    return wheels[0]


def record_of(wheel: Path) -> dict[str, str]:
    """``path -> sha256=...`` for every file the wheel's RECORD lists."""
    with zipfile.ZipFile(wheel) as archive:
        (record,) = (n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        lines = archive.read(record).decode().splitlines()
    entries = {}
    for line in lines:
        path, digest, _size = line.rsplit(",", 2)
        if digest and not path.endswith(SKIPPED):
            entries[path] = digest
    return entries


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def check(name: str, wheel: Path) -> list[str]:
    """Problems with the installed ``name`` compared with ``wheel``."""
    try:
        installed = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return [f"{name} is not installed"]
    problems = []
    if '"editable": true' in (installed.read_text("direct_url.json") or ""):
        problems.append(f"{name} is an editable install")
    site = Path(str(installed.locate_file("")))
    for path, digest in record_of(wheel).items():
        target = site / path
        if not target.is_file():
            problems.append(f"{name}: {path} of {wheel.name} is not installed")
        elif sha256_of(target) != digest:
            problems.append(f"{name}: {target} differs from {path} in {wheel.name}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, required=True, help="the folder tox -e release fills")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--compiled", action="store_true", help="dloop's C wheel is expected")
    kind.add_argument("--pure", action="store_true", help="dloop's pure-Python wheel is expected")
    parser.add_argument("names", nargs="+", help="distributions: dloop, dloop-torch, dloop-jax")
    args = parser.parse_args()

    problems = []
    for name in args.names:
        pure = args.pure if name == "dloop" else True
        problems += check(name, wheel_for(args.dist, name, pure=pure))
        module = importlib.import_module(name.replace("-", "_"))
        source = Path(str(module.__file__)).resolve()
        if (ROOT / "packages") in source.parents:
            problems.append(f"{name} is imported from the source tree: {source}")
        print(f"check_installed: {name} {importlib.metadata.version(name)} from {source.parent}")
    try:
        importlib.import_module("dloop._speedups")
        has_speedups = True
    except ImportError:
        has_speedups = False
    if has_speedups == args.pure:
        problems.append(
            f"dloop._speedups is {'present' if has_speedups else 'missing'}, but the "
            f"{'pure-Python' if args.pure else 'compiled'} wheel is expected"
        )
    for problem in problems:
        print(f"check_installed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
