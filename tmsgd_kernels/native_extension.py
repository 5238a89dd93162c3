"""The compiled extension tmsgd_kernels._C: loading it registers the C++ (CPU) and CUDA kernels of
the op tmsgd_kernels::tmsgd_step, whose schema tmsgd_kernels/ops.py defines, and the C++
version-counter kernel of both ops (csrc/version_counter.cpp).

When it is missing or does not load, `load_error` says which, what to do about it where this copy
of the package lives (a source checkout or an installed package), and what runs instead."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import torch

OP_NAME = "tmsgd_kernels::tmsgd_step"

_PACKAGE = Path(__file__).resolve().parent
# A source checkout (the tree itself on the path, or an editable install of it) has the build
# script and the C++ sources beside the package; an installed copy has neither.
CHECKOUT: Path | None = (_PACKAGE.parent if (_PACKAGE.parent / "setup.py").is_file()
                         and (_PACKAGE.parent / "csrc").is_dir() else None)
INSTEAD = ("until then TMSGD(backend='auto') runs the pure-PyTorch `torch` backend instead "
           "(several times slower; `triton` on a GPU where Triton is installed)")


def rebuild_hint() -> str:
    """How to (re)build the extension for this copy of the package and the torch running now."""
    if CHECKOUT is not None:
        return (f"build it with `pip install -e .` in {CHECKOUT} (or `python setup.py build_ext "
                f"--inplace` there)")
    return ("reinstall tmsgd-kernels from its source (its sdist or a checkout) where a C++ "
            f"compiler and this torch ({torch.__version__}) are installed: `pip install "
            "--force-reinstall --no-deps <sdist or checkout>`")


def describe_failure(error: BaseException, built: bool) -> str:
    """The message for an extension that is absent (`built` False) or present but not loadable
    (`error` from loading it)."""
    if not built:
        where = ("is not built in this checkout" if CHECKOUT is not None else
                 "is not part of this installation (installed with TMSGD_NO_EXTENSION=1, or "
                 "copied without it)")
        return f"the C++ extension tmsgd_kernels._C {where}; {rebuild_hint()}; {INSTEAD}"
    # Python's own text for a partly imported package ("most likely due to a circular import")
    # only misleads here; the loader's message (a missing symbol, a missing library) helps.
    cause = str(error)
    if "undefined symbol" in cause:
        cause += (f"; it was built against another torch release than the one running "
                  f"({torch.__version__})")
    return (f"the C++ extension tmsgd_kernels._C does not load ({cause}); {rebuild_hint()}; "
            f"{INSTEAD}")


try:
    from . import _C  # noqa: F401  (loading the library registers the kernels)

    load_error: str | None = None
except (ImportError, OSError) as error:
    _C = None
    load_error = describe_failure(error, built=find_spec(f"{__package__}._C") is not None)


def has_kernel(dispatch_key: str) -> bool:
    """Whether the loaded extension registered an implementation for `dispatch_key` (CPU, CUDA)."""
    if _C is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, dispatch_key)


def cpu_capability() -> str | None:
    """The instruction set the CPU implementation runs: AVX512, AVX2, DEFAULT (None if unbuilt)."""
    return None if _C is None else _C.cpu_capability()
