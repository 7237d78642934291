"""Check the release artefacts in a dist/ folder: names, tags, contents and metadata.

``python tools/check_dist.py dist`` prints every problem it finds and exits 1 if there is
any. It expects exactly the files a release uploads: three sdists, the compiled core wheel
(manylinux, for one CPython or for the stable ABI), the pure-Python core wheel and the two
adapter wheels, all of one version. Each wheel must hold exactly the package's modules and
``py.typed`` (the compiled one also the extension and its stub ``_speedups.pyi``, which the
pure one must not have; nothing grafted by auditwheel), each sdist
what building a wheel needs and nothing a checkout accumulates, and the metadata what the
package index shows: license expression, Python versions, project links, a README that
shows the loop.
"""

from __future__ import annotations

import re
import struct
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
URL_LABELS = ("Homepage", "Documentation", "Repository", "Changelog", "Issues")
DOCS_URL = "https://eballesteros.github.io/dloop/"
SPEEDUPS_STUB = "dloop/_speedups.pyi"
EXTENSION = re.compile(r"dloop/_speedups\.(?:cpython-(3\d+)-[\w-]+|abi3)\.so")
MANYLINUX = re.compile(r"^(?:manylinux\d+|manylinux_\d+_\d+)_x86_64$")


@dataclass(frozen=True)
class Distribution:
    """One distribution of the monorepo, as its artefacts should be."""

    name: str  # the name on the index
    stem: str  # the name in file names
    folder: str  # under packages/
    module: str  # the import name
    requires: tuple[str, ...]  # Requires-Dist lines, exactly


DISTRIBUTIONS = (
    Distribution(
        "dloop",
        "dloop",
        "dloop-core",
        "dloop",
        ('dloop-torch==0.2.0; extra == "torch"', 'dloop-jax==0.2.0; extra == "jax"'),
    ),
    Distribution(
        "dloop-torch",
        "dloop_torch",
        "dloop-torch",
        "dloop_torch",
        ("dloop==0.2.0", "torch>=2.4", "numpy"),
    ),
    Distribution(
        "dloop-jax", "dloop_jax", "dloop-jax", "dloop_jax", ("dloop==0.2.0", "jax>=0.4.31", "numpy")
    ),
)


def version_of(root: Path) -> str:
    """The core's version, read from its pyproject.toml (all three are in lockstep)."""
    text = (root / "packages" / "dloop-core" / "pyproject.toml").read_text()
    found = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    assert found is not None, "packages/dloop-core/pyproject.toml has no version"
    return found.group(1)


def module_files(root: Path, dist: Distribution) -> set[str]:
    """Paths, inside a wheel, of the package's modules, stubs and ``py.typed``."""
    src = root / "packages" / dist.folder / "src"
    return {
        path.relative_to(src).as_posix()
        for path in (src / dist.module).rglob("*")
        if path.is_file() and (path.suffix in {".py", ".pyi"} or path.name == "py.typed")
    }


def check_metadata(label: str, meta: Message, dist: Distribution, version: str) -> list[str]:
    """What the package index will show for this artefact."""
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"{label}: {what}")

    expect(meta.get("Name") == dist.name, f"Name is {meta.get('Name')!r}, not {dist.name!r}")
    expect(meta.get("Version") == version, f"Version is {meta.get('Version')!r}, not {version!r}")
    expect(meta.get("Requires-Python") == ">=3.10", "Requires-Python is not >=3.10")
    expect(meta.get("License-Expression") == "MIT", "License-Expression is not MIT")
    expect("LICENSE" in (meta.get_all("License-File") or []), "no License-File: LICENSE")
    classifiers = meta.get_all("Classifier") or []
    expect(
        not any(c.startswith("License ::") for c in classifiers),
        "a License classifier next to License-Expression (PEP 639: the expression only)",
    )
    for python in PYTHONS:
        expect(
            f"Programming Language :: Python :: {python}" in classifiers,
            f"no classifier for Python {python}",
        )
    requires = [" ".join(line.split()) for line in meta.get_all("Requires-Dist") or []]
    expect(
        sorted(requires) == sorted(dist.requires),
        f"Requires-Dist is {requires}, expected {list(dist.requires)}",
    )
    urls = {
        label.strip(): url.strip()
        for label, _, url in (line.partition(",") for line in meta.get_all("Project-URL") or [])
    }
    for needed in URL_LABELS:
        expect(needed in urls, f"no Project-URL {needed!r} (has {sorted(urls)})")
    readme = meta.get_payload()
    expect(meta.get("Description-Content-Type") == "text/markdown", "README is not Markdown")
    expect(
        isinstance(readme, str)
        and re.search(r"^for .+ in (loop|Loop\()", readme, re.M) is not None,
        "the README does not show the loop",
    )
    expect(isinstance(readme, str) and DOCS_URL in readme, f"the README does not link {DOCS_URL}")
    expect(
        isinstance(readme, str) and "unrelated" not in readme,
        "the README calls dloop 0.1.0 unrelated: it is this project's previous release",
    )
    return problems


def run_paths(elf: bytes) -> list[str]:
    """The RPATH and RUNPATH entries of a 64-bit little-endian ELF file (an extension)."""
    if elf[:6] != b"\x7fELF\x02\x01":
        return []
    (section_offset,) = struct.unpack_from("<Q", elf, 0x28)
    entry_size, count = struct.unpack_from("<HH", elf, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", elf, section_offset + i * entry_size)
        for i in range(count)
    ]
    paths = []
    for _name, kind, _flags, _addr, offset, size, link, *_ in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strings_offset = sections[link][4]
        for at in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", elf, at)
            if tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                end = elf.index(b"\0", strings_offset + value)
                paths.append(elf[strings_offset + value : end].decode())
    return paths


def wheel_tags(wheel: zipfile.ZipFile, info: str) -> tuple[Message, list[str]]:
    message = Parser().parsestr(wheel.read(f"{info}/WHEEL").decode())
    return message, message.get_all("Tag") or []


def check_wheel(path: Path, dist: Distribution, version: str, root: Path) -> list[str]:
    """The wheel holds the package's files and its dist-info, nothing else."""
    problems: list[str] = []
    info = f"{dist.stem}-{version}.dist-info"
    with zipfile.ZipFile(path) as wheel:
        names = {name for name in wheel.namelist() if not name.endswith("/")}
        meta = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        message, tags = wheel_tags(wheel, info)
        for name in sorted(n for n in names if EXTENSION.fullmatch(n)):
            for run_path in run_paths(wheel.read(name)):
                problems.append(f"{path.name}: {name} has a run-time library path {run_path}")
    problems += check_metadata(path.name, meta, dist, version)
    expected = module_files(root, dist) | {
        f"{info}/{name}" for name in ("METADATA", "WHEEL", "RECORD", "licenses/LICENSE")
    }
    if dist.name == "dloop":
        expected.add(f"{info}/top_level.txt")  # setuptools writes it
    pure = path.name.endswith("-py3-none-any.whl")
    extensions = sorted(name for name in names if EXTENSION.fullmatch(name))
    if pure:
        # The extension's stub describes a module the pure wheel does not have.
        expected.discard(SPEEDUPS_STUB)
        if message.get("Root-Is-Purelib") != "true":
            problems.append(f"{path.name}: Root-Is-Purelib is not true")
        if tags != ["py3-none-any"]:
            problems.append(f"{path.name}: WHEEL tags are {tags}, not py3-none-any")
    elif len(extensions) != 1:
        problems.append(f"{path.name}: expected one dloop/_speedups extension, got {extensions}")
    else:
        expected.add(extensions[0])
        problems += check_compiled_tags(path.name, extensions[0], tags)
    for name in sorted(names - expected):
        problems.append(f"{path.name}: stray file {name}")
    for name in sorted(expected - names):
        problems.append(f"{path.name}: missing {name}")
    return problems


def check_compiled_tags(label: str, extension: str, tags: list[str]) -> list[str]:
    """A compiled wheel's tags agree with its extension and are manylinux."""
    problems: list[str] = []
    found = EXTENSION.fullmatch(extension)
    assert found is not None
    python = f"cp{found.group(1)}" if found.group(1) else "cp310"
    abi = python if found.group(1) else "abi3"
    for tag in tags:
        interpreter, tag_abi, platform = tag.split("-")
        if (interpreter, tag_abi) != (python, abi):
            problems.append(f"{label}: tag {tag} does not match {extension} ({python}-{abi})")
        if not MANYLINUX.match(platform):
            problems.append(f"{label}: tag {tag} is not manylinux (run auditwheel repair)")
    if not tags:
        problems.append(f"{label}: WHEEL has no Tag")
    return problems


def check_sdist(path: Path, dist: Distribution, version: str, root: Path) -> list[str]:
    """The sdist holds what a wheel is built from, and nothing a checkout accumulates."""
    problems: list[str] = []
    top = f"{dist.stem}-{version}"
    with tarfile.open(path) as archive:
        names = {member.name for member in archive.getmembers() if member.isfile()}
        pkg_info = archive.extractfile(f"{top}/PKG-INFO")
        assert pkg_info is not None
        meta = Parser().parsestr(pkg_info.read().decode())
    problems += check_metadata(path.name, meta, dist, version)
    needed = {f"{top}/{name}" for name in ("PKG-INFO", "pyproject.toml", "README.md", "LICENSE")}
    needed |= {f"{top}/src/{name}" for name in module_files(root, dist)}
    allowed = set(needed)
    if dist.name == "dloop":
        needed |= {f"{top}/setup.py", f"{top}/src/dloop/_speedups.c"}
        allowed |= needed | {f"{top}/setup.cfg"}
        allowed |= {name for name in names if name.startswith(f"{top}/src/dloop.egg-info/")}
    for name in sorted(needed - names):
        problems.append(f"{path.name}: missing {name}")
    for name in sorted(names - allowed):
        problems.append(f"{path.name}: stray file {name}")
    return problems


def check(dist_dir: Path, root: Path = ROOT) -> list[str]:
    """Every problem with the artefacts in ``dist_dir``; an empty list when all is well."""
    version = version_of(root)
    problems: list[str] = []
    files = {path.name: path for path in dist_dir.iterdir()}
    seen: set[str] = set()
    for dist in DISTRIBUTIONS:
        sdist = f"{dist.stem}-{version}.tar.gz"
        if sdist in files:
            try:
                problems += check_sdist(files[sdist], dist, version, root)
            except (tarfile.TarError, KeyError) as error:
                problems.append(f"{sdist}: not a readable sdist ({error})")
            seen.add(sdist)
        else:
            problems.append(f"missing {sdist}")
        wheels = sorted(name for name in files if name.startswith(f"{dist.stem}-{version}-"))
        wanted = 2 if dist.name == "dloop" else 1
        pure = f"{dist.stem}-{version}-py3-none-any.whl"
        if pure not in wheels:
            problems.append(f"missing {pure}")
        if len(wheels) != wanted:
            problems.append(f"expected {wanted} {dist.name} wheel(s), got {wheels}")
        for name in wheels:
            if name.endswith(".whl"):
                try:
                    problems += check_wheel(files[name], dist, version, root)
                except (zipfile.BadZipFile, KeyError) as error:
                    problems.append(f"{name}: not a readable wheel ({error})")
                seen.add(name)
    for name in sorted(set(files) - seen):
        problems.append(f"stray file in {dist_dir.name}/: {name}")
    return problems


def main(argv: list[str]) -> int:
    dist_dir = Path(argv[1]) if len(argv) > 1 else ROOT / "dist"
    problems = check(dist_dir)
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if problems:
        return 1
    names = ", ".join(sorted(path.name for path in dist_dir.iterdir()))
    print(f"check_dist: all artefacts in {dist_dir} are as a release needs them: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
