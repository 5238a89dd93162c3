"""The package's version, in one place: pyproject.toml reads it (setuptools `attr:`, statically,
without importing the package) and tmsgd_kernels/__init__.py re-exports it."""

__version__ = "0.1.0"
