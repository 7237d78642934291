"""Build dloop with its optional C accelerator; the metadata lives in pyproject.toml.

The extension ``dloop._speedups`` speeds up the per-step hot path over sized data. It uses
only the limited C API of CPython 3.10, so one ``cp310-abi3`` wheel serves CPython 3.10 and
every later version. It is optional: when it cannot be built (no compiler, an interpreter
without the C API such as PyPy) the build goes on and dloop runs its pure-Python path,
which behaves the same. ``DLOOP_PURE_PYTHON=1`` at run time forces the pure-Python path.
Free-threaded CPython builds (which have no stable ABI) build without it.
"""

import sysconfig

from setuptools import Extension, setup

LIMITED_API = "0x030A0000"  # CPython 3.10
free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

setup(
    ext_modules=[]
    if free_threaded
    else [
        Extension(
            "dloop._speedups",
            ["src/dloop/_speedups.c"],
            optional=True,
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", LIMITED_API)],
        ),
    ],
    options={} if free_threaded else {"bdist_wheel": {"py_limited_api": "cp310"}},
)
