"""The package's PEP 517 build backend: setuptools' own, except that a wheel is built against the
torch the user already has, not a second one downloaded into the isolated build environment.

The compiled extension links against the torch it is built with and loads only into that same
torch release, so building against a freshly downloaded torch (2.8 GB with its CUDA libraries)
would both waste the download and produce an extension that the user's torch cannot load.

pip runs the hooks with the interpreter that runs pip itself, hiding that interpreter's
site-packages (build isolation). `get_requires_for_build_wheel` asks that interpreter, with the
isolation undone, whether it has a torch that satisfies the package's own requirement
(pyproject.toml's `dependencies`); if it has, no torch is requested and the build hooks import
that torch, appended to the end of the path (the build environment's setuptools and ninja come
first). If it has none, the requirement is returned and the installer provides a torch as usual.
`python -m build --wheel` runs the hooks in a venv of its own, which hides the user's
interpreter entirely: use `python -m build --wheel --no-isolation` (or `pip wheel .`) there.
The sdist and metadata hooks need no torch (setup.py imports it only to build).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from packaging.requirements import Requirement
from setuptools import build_meta as _setuptools
from setuptools.build_meta import (
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

try:
    import tomllib
except ImportError:  # Python 3.10: the build requirement `tomli` is the same parser
    import tomli as tomllib

__all__ = ["build_editable", "build_sdist", "build_wheel", "get_requires_for_build_editable",
           "get_requires_for_build_sdist", "get_requires_for_build_wheel",
           "prepare_metadata_for_build_editable", "prepare_metadata_for_build_wheel"]

# Run by the interpreter that runs the installer: where its torch is and which version, without
# importing it (an import takes seconds and may initialise CUDA).
_FIND_TORCH = """
import json, os
from importlib.metadata import version
from importlib.util import find_spec
spec = find_spec("torch")
site = None if spec is None else os.path.dirname(os.path.dirname(spec.origin))
print(json.dumps(site and {"version": version("torch"), "site": site}))
"""
# Environment variables with which pip hides the outer interpreter's site-packages.
_ISOLATION_VARIABLES = ("PYTHONPATH", "PYTHONNOUSERSITE")


def _torch_requirement() -> Requirement:
    """The torch requirement of pyproject.toml's `dependencies`, the one place it is written."""
    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    return next(r for r in map(Requirement, dependencies) if r.name == "torch")


def _outer_torch_site() -> str | None:
    """The site-packages folder of the torch of the interpreter that runs these hooks, seen
    without the installer's isolation; None when it has no torch within the requirement."""
    environment = {k: v for k, v in os.environ.items() if k not in _ISOLATION_VARIABLES}
    found = subprocess.run([sys.executable, "-c", _FIND_TORCH], env=environment,
                           capture_output=True, text=True, timeout=120)
    torch = json.loads(found.stdout) if found.returncode == 0 and found.stdout.strip() else None
    if torch is None:
        return None
    if not _torch_requirement().specifier.contains(torch["version"], prereleases=True):
        print(f"tmsgd-kernels build: the torch of {sys.executable} ({torch['version']}) is "
              f"outside {_torch_requirement()}; the build environment gets its own",
              file=sys.stderr)
        return None
    return torch["site"]


def _requires(settings: dict | None, setuptools_hook) -> list[str]:
    own = setuptools_hook(settings)
    if find_spec("torch") is not None or _outer_torch_site() is not None:
        return own
    return [*own, str(_torch_requirement())]


def _use_outer_torch() -> None:
    if find_spec("torch") is not None:  # no isolation, or the build environment has its own
        return
    site = _outer_torch_site()
    if site is not None:
        print(f"tmsgd-kernels build: building against the torch in {site} "
              f"(the interpreter {sys.executable})", file=sys.stderr)
        sys.path.append(site)


def get_requires_for_build_wheel(config_settings: dict | None = None) -> list[str]:
    return _requires(config_settings, _setuptools.get_requires_for_build_wheel)


def get_requires_for_build_editable(config_settings: dict | None = None) -> list[str]:
    return _requires(config_settings, _setuptools.get_requires_for_build_editable)


def build_wheel(wheel_directory: str, config_settings: dict | None = None,
                metadata_directory: str | None = None) -> str:
    _use_outer_torch()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory: str, config_settings: dict | None = None,
                   metadata_directory: str | None = None) -> str:
    _use_outer_torch()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
