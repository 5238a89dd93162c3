"""Packaging: what the sdist holds, how the build backend finds the installed torch, the version's
one source, and what the package says when its extension is missing or does not load.

Building and installing the sdist with pip's default build isolation, in a fresh venv, is
.ci/sdist_check.sh (minutes of compiling: CI, not the test suite)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest
import torch

import tmsgd_kernels._version
from tmsgd_kernels import native_extension

ROOT = Path(__file__).resolve().parents[1]


def _backend():
    sys.path.insert(0, str(ROOT / "build_backend"))
    try:
        import tmsgd_build
    finally:
        sys.path.remove(str(ROOT / "build_backend"))
    return tmsgd_build


def _checkout_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [f for f in listed.splitlines() if (ROOT / f).is_file()]


def test_sdist_holds_every_source_it_builds_from(tmp_path) -> None:
    """The sdist made by the backend's own hook (from a copy of the checkout) has every C++/CUDA
    source and header, the Triton kernels, the backend, the licence and README, and no tests."""
    files = _checkout_files()
    source = tmp_path / "checkout"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((ROOT / name).read_bytes())
    script = ("import sys; sys.path.insert(0, 'build_backend'); import tmsgd_build; "
              f"print(tmsgd_build.build_sdist({str(tmp_path)!r}))")
    made = subprocess.run([sys.executable, "-c", script], cwd=source, check=True, timeout=300,
                          capture_output=True, text=True)
    archive = tmp_path / made.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as sdist:
        top = f"tmsgd_kernels-{tmsgd_kernels._version.__version__}/"
        held = {m.name.removeprefix(top) for m in sdist.getmembers() if m.isfile()}
    needed = {f for f in files
              if f.startswith(("csrc/", "triton_kernels/", "build_backend/"))
              or (f.startswith("tmsgd_kernels/") and f.endswith((".py", "py.typed")))
              or f in ("LICENSE", "README.md", "pyproject.toml", "setup.py")}
    assert {"csrc/cpu_capability/avx2.cpp", "csrc/tmsgd_update.h", "tmsgd_kernels/py.typed",
            "LICENSE"} <= needed
    assert needed - held == set()
    assert not any(name.startswith("tests/") for name in held)


def test_backend_builds_against_the_torch_of_the_interpreter_running_pip(monkeypatch) -> None:
    """Under pip's isolation the hook's process cannot import torch (find_spec None) but the
    interpreter running it can: no torch is requested, and the build imports that one."""
    backend = _backend()
    own = ["setuptools>=77"]
    monkeypatch.setattr(backend, "find_spec", lambda name: None)
    assert backend._requires(None, lambda settings: own) == own
    site = str(Path(torch.__file__).resolve().parents[1])
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != site])
    backend._use_outer_torch()
    assert sys.path[-1] == site


def test_backend_requests_torch_where_the_interpreter_has_none_that_fits(monkeypatch,
                                                                        tmp_path) -> None:
    backend = _backend()
    monkeypatch.setattr(backend, "find_spec", lambda name: None)
    own = ["setuptools>=77"]
    # This interpreter's torch, outside the requirement: the build environment gets its own.
    monkeypatch.setattr(backend, "_torch_requirement",
                        lambda: backend.Requirement("torch>=99"))
    assert backend._requires(None, lambda settings: own) == [*own, "torch>=99"]
    monkeypatch.undo()
    # An interpreter without torch (a bare venv): the package's own requirement.
    venv.create(tmp_path / "bare", with_pip=False)
    monkeypatch.setattr(backend, "find_spec", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bare" / "bin" / "python"))
    assert backend._requires(None, lambda settings: own) == [*own, "torch<2.15,>=2.11"]


def test_version_has_one_source() -> None:
    """The installed metadata's version is tmsgd_kernels/_version.py's (pyproject reads it)."""
    assert importlib.metadata.version("tmsgd-kernels") == tmsgd_kernels._version.__version__


@pytest.mark.parametrize("where", ["checkout", "installed"])
def test_extension_messages_say_what_runs_instead_and_how_to_rebuild(monkeypatch, where) -> None:
    monkeypatch.setattr(native_extension, "CHECKOUT", ROOT if where == "checkout" else None)
    # What Python says when a package's submodule is missing.
    missing = ImportError("cannot import name '_C' from partially initialized module "
                          "'tmsgd_kernels' (most likely due to a circular import)")
    stale = ImportError("/site/tmsgd_kernels/_C.so: undefined symbol: _ZN3c104impl8GPUTrace")
    absent, broken = (native_extension.describe_failure(missing, built=False),
                      native_extension.describe_failure(stale, built=True))
    for message in (absent, broken):
        assert "runs the pure-PyTorch `torch` backend instead" in message
        assert "circular import" not in message
        if where == "checkout":
            assert f"`pip install -e .` in {ROOT}" in message
        else:
            assert "repository" not in message and "checkout:" not in message
            assert "pip install --force-reinstall --no-deps" in message
    assert ("is not built in this checkout" if where == "checkout"
            else "is not part of this installation") in absent
    assert "undefined symbol" in broken
    assert f"built against another torch release than the one running ({torch.__version__})" \
        in broken


def test_this_checkout_is_recognised_as_one() -> None:
    assert native_extension.CHECKOUT == ROOT
