"""The optional C extension ``erpoz.speedups._speedups`` (the audit's per-event hashing; see
``src/erpoz/speedups/__init__.py``). Everything else is in pyproject.toml. ``optional=True``:
where it cannot be built (no C compiler, no Python headers) the install goes on without it and erpoz
uses its pure-Python code, which gives the same results."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("erpoz.speedups._speedups", ["src/erpoz/speedups/_speedups.c"], optional=True),
    ]
)
