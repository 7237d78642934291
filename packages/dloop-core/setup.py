"""Build dloop with its optional C accelerator; the metadata lives in pyproject.toml.

The extension ``dloop._speedups`` speeds up the per-step hot path over sized data. It uses
only the limited C API of CPython 3.10, so one ``cp310-abi3`` wheel serves CPython 3.10 and
every later version. It is optional: when it cannot be built (no compiler, an interpreter
without the C API such as PyPy) the build goes on and dloop runs its pure-Python path,
which behaves the same. ``DLOOP_PURE_PYTHON=1`` at run time forces the pure-Python path.
Free-threaded CPython builds (which have no stable ABI) build without it.
``DLOOP_BUILD_PURE=1`` at build time leaves it out too, for the ``py3-none-any`` wheel that
PyPy and platforms without a compiled wheel install (``tox -e release``). A build without
the extension leaves out its type stub, ``_speedups.pyi``, as well.
"""

import os
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

LIMITED_API = "0x030A0000"  # CPython 3.10
STUB = "_speedups.pyi"
free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
pure = free_threaded or os.environ.get("DLOOP_BUILD_PURE") == "1"


class BuildPy(build_py):
    """build_py that leaves the extension's stub out of a build without the extension."""

    def exclude_data_files(self, package, src_dir, files):
        files = super().exclude_data_files(package, src_dir, files)
        if pure and package == "dloop":
            files = [name for name in files if os.path.basename(name) != STUB]
        return files


setup(
    cmdclass={"build_py": BuildPy},
    ext_modules=[]
    if pure
    else [
        Extension(
            "dloop._speedups",
            ["src/dloop/_speedups.c"],
            optional=True,
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", LIMITED_API)],
        ),
    ],
    options={} if pure else {"bdist_wheel": {"py_limited_api": "cp310"}},
)
