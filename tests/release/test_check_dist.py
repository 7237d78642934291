"""tools/check_dist.py passes the artefacts `tox -e release` built, and catches what is wrong.

Each test copies dist/ and breaks one thing in the copy: a stray file in a wheel, a
missing ``py.typed``, the extension's stub in the pure wheel or missing from the compiled
one, a missing extension, a plain ``linux`` tag, a License classifier, a file in dist/ that
is no release artefact, a checkout's leftover in an sdist. Runs in
``tox -e release``, after the build.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_dist", ROOT / "tools" / "check_dist.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_dist"] = module
    spec.loader.exec_module(module)
    return module


check_dist = load_checker()
pytestmark = pytest.mark.skipif(
    not any(DIST.glob("*.whl")), reason="dist/ is empty: tox -e release builds it first"
)


def rewrite_wheel(wheel: Path, change: Callable[[str, bytes], tuple[str, bytes] | None]) -> None:
    """Rewrite ``wheel`` in place, passing each member through ``change`` (None drops it)."""
    members = []
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            changed = change(name, archive.read(name))
            if changed is not None:
                members.append(changed)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)


@pytest.fixture
def dist_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "dist"
    shutil.copytree(DIST, copy)
    return copy


def only(dist: Path, pattern: str) -> Path:
    (path,) = dist.glob(pattern)
    return path


def test_the_built_artefacts_pass() -> None:
    assert check_dist.check(DIST) == []


def test_a_stray_file_in_a_wheel_is_reported(dist_copy: Path) -> None:
    wheel = only(dist_copy, "dloop_torch-*.whl")
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("tests/test_something.py", "")
    assert check_dist.check(dist_copy) == [f"{wheel.name}: stray file tests/test_something.py"]


def test_a_missing_py_typed_is_reported(dist_copy: Path) -> None:
    wheel = only(dist_copy, "dloop-*-py3-none-any.whl")
    rewrite_wheel(wheel, lambda name, data: None if name == "dloop/py.typed" else (name, data))
    assert check_dist.check(dist_copy) == [f"{wheel.name}: missing dloop/py.typed"]


def test_the_extensions_stub_in_the_pure_wheel_is_reported(dist_copy: Path) -> None:
    wheel = only(dist_copy, "dloop-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("dloop/_speedups.pyi", "")
    assert check_dist.check(dist_copy) == [f"{wheel.name}: stray file dloop/_speedups.pyi"]


def test_a_compiled_wheel_without_the_extensions_stub_is_reported(dist_copy: Path) -> None:
    wheel = next(w for w in dist_copy.glob("dloop-*.whl") if not w.name.endswith("-any.whl"))
    rewrite_wheel(wheel, lambda name, data: None if name.endswith(".pyi") else (name, data))
    assert check_dist.check(dist_copy) == [f"{wheel.name}: missing dloop/_speedups.pyi"]


def test_a_compiled_wheel_without_the_extension_is_reported(dist_copy: Path) -> None:
    wheel = next(w for w in dist_copy.glob("dloop-*.whl") if not w.name.endswith("-any.whl"))
    rewrite_wheel(wheel, lambda name, data: None if name.endswith(".so") else (name, data))
    problems = check_dist.check(dist_copy)
    assert problems == [f"{wheel.name}: expected one dloop/_speedups extension, got []"]


def test_a_plain_linux_tag_is_reported(dist_copy: Path) -> None:
    wheel = next(w for w in dist_copy.glob("dloop-*.whl") if not w.name.endswith("-any.whl"))

    def unrepaired(name: str, data: bytes) -> tuple[str, bytes]:
        if name.endswith(".dist-info/WHEEL"):
            lines = data.decode().splitlines()
            (first, *_) = [line for line in lines if line.startswith("Tag: ")]
            kept = [line for line in lines if line and not line.startswith("Tag: ")]
            unrepaired_tag = first.rsplit("-", 1)[0] + "-linux_x86_64"
            data = "\n".join([*kept, unrepaired_tag, ""]).encode()
        return name, data

    rewrite_wheel(wheel, unrepaired)
    problems = check_dist.check(dist_copy)
    assert len(problems) == 1
    assert "is not manylinux" in problems[0]


def test_a_license_classifier_next_to_the_expression_is_reported(dist_copy: Path) -> None:
    wheel = only(dist_copy, "dloop_jax-*.whl")

    def with_classifier(name: str, data: bytes) -> tuple[str, bytes]:
        if name.endswith(".dist-info/METADATA"):
            data = data.replace(
                b"Classifier: Typing :: Typed",
                b"Classifier: License :: OSI Approved :: MIT License\nClassifier: Typing :: Typed",
            )
        return name, data

    rewrite_wheel(wheel, with_classifier)
    problems = check_dist.check(dist_copy)
    assert problems == [
        f"{wheel.name}: a License classifier next to License-Expression "
        "(PEP 639: the expression only)"
    ]


def test_a_file_that_is_no_release_artefact_is_reported(dist_copy: Path) -> None:
    (dist_copy / "dloop-0.2.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    problems = check_dist.check(dist_copy)
    assert any("expected 2 dloop wheel(s)" in problem for problem in problems)


def test_a_checkout_leftover_in_an_sdist_is_reported(dist_copy: Path) -> None:
    sdist = only(dist_copy, "dloop-*.tar.gz")
    top = sdist.name.removesuffix(".tar.gz")
    members = []
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member) if member.isfile() else None
            members.append((member, extracted.read() if extracted else None))
    with tarfile.open(sdist, "w:gz") as archive:
        for member, data in members:
            archive.addfile(member, io.BytesIO(data) if data is not None else None)
        leftover = tarfile.TarInfo(f"{top}/src/dloop/__pycache__/_loop.cpython-311.pyc")
        leftover.size = 0
        archive.addfile(leftover, io.BytesIO(b""))
    assert check_dist.check(dist_copy) == [
        f"{sdist.name}: stray file {top}/src/dloop/__pycache__/_loop.cpython-311.pyc"
    ]
