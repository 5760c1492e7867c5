"""Builds the Cython extensions in nunet/_native; all metadata lives in pyproject.toml."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# Portable wheel: -O3 but no -march=native, so a wheel built here runs on any x86-64/arm64.
CFLAGS = ["-O3", "-fno-strict-aliasing"]

extensions = [
    Extension(f"nunet._native.{pyx.stem}", [str(pyx)], extra_compile_args=CFLAGS)
    for pyx in sorted(Path("nunet/_native").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
