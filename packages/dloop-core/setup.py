"""Build dloop with its optional C accelerator; the metadata lives in pyproject.toml.

The extension ``dloop._speedups`` speeds up the per-step hot path over sized data. It is
optional: when it cannot be built (no compiler, an interpreter without the C API such as
PyPy) the build goes on and dloop runs its pure-Python path, which behaves the same.
``DLOOP_PURE_PYTHON=1`` at run time forces the pure-Python path.
``DLOOP_BUILD_PURE=1`` at build time leaves the extension out, for the ``py3-none-any``
wheel that PyPy and platforms without a compiled wheel install (``tox -e release``).
"""

import os

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("dloop._speedups", ["src/dloop/_speedups.c"], optional=True),
    ]
    if os.environ.get("DLOOP_BUILD_PURE") != "1"
    else [],
)
