"""Which implementations of the step exist, which can run on a device, and which `backend="auto"`
picks. The step itself is called in one place, tmsgd_kernels/functional.py.

    cuda    the C++/CUDA kernel of csrc/, op tmsgd_kernels::tmsgd_step (CUDA tensors)
    triton  the Triton kernels of triton_kernels/, op tmsgd_kernels::tmsgd_step_triton (CUDA
            tensors; CPU tensors under TRITON_INTERPRET=1, for tests, never chosen by auto)
    cpu     the C++ kernel of csrc/, op tmsgd_kernels::tmsgd_step (CPU tensors)
    torch   plain PyTorch (tmsgd_kernels/torch_step.py): any device, and what torch.compile traces
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

from . import native_extension, ops

# Preference order for backend="auto" (fastest first).
IMPLEMENTATIONS = ("cuda", "triton", "cpu", "torch")
BACKEND_NAMES = ("auto", *IMPLEMENTATIONS)

_TRITON_INSTALL = (
    f"install the Triton release that matches torch {torch.__version__} "
    "(for example `pip install tmsgd-kernels[triton]`, or the `triton` version torch pins)"
)


def _native_reason(dispatch_key: str) -> str | None:
    if native_extension.load_error is not None:
        return native_extension.load_error
    if native_extension.has_kernel(dispatch_key):
        return None
    if dispatch_key == "CUDA":
        return ("the extension was built without CUDA; rebuild it with a CUDA build of torch "
                "and a CUDA toolkit (CUDA_HOME set, nvcc on it): "
                + native_extension.rebuild_hint())
    return f"the loaded extension has no {dispatch_key} implementation of the step"


def _triton_interpreting() -> bool:
    """Whether the Triton kernels run under the interpreter. Triton decides when a kernel is
    defined, so once they are imported their own kind counts, not the environment now."""
    defined = sys.modules.get("tmsgd_kernels.triton_kernels.count_kernel")
    if defined is not None:
        return type(defined.advance_counts_kernel).__name__ == "InterpretedFunction"
    return os.environ.get("TRITON_INTERPRET") == "1"


def _triton_reason(device: torch.device) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as error:
        if error.name == "triton":
            return f"Triton is not installed: {_TRITON_INSTALL}"
        return f"Triton failed to import ({error}): {_TRITON_INSTALL}"
    except Exception as error:  # a broken or mismatched install
        return f"Triton failed to import ({error}): {_TRITON_INSTALL}"
    if device.type == "cuda":
        if _triton_interpreting():
            return ("TRITON_INTERPRET=1 is set, so Triton interprets kernels on the host, where "
                    "CUDA tensors' addresses cannot be read; unset it to run compiled on the GPU")
        if not torch.cuda.is_available():
            return "no CUDA GPU is available to this process"
        return None
    if device.type == "cpu":
        if _triton_interpreting():
            return None
        return ("Triton compiles for GPUs; it runs on CPU tensors only under its interpreter: "
                "set TRITON_INTERPRET=1 in the environment before the first Triton step "
                "(slow, meant for testing)")
    return f"Triton runs on CUDA devices (and on CPU under TRITON_INTERPRET=1), not {device.type}"


def unavailable_reason(name: str, device: torch.device | str) -> str | None:
    """None if implementation `name` can step tensors on `device`, else a sentence saying why."""
    device = torch.device(device)
    if name == "torch":
        return None
    if name == "cpu":
        if device.type != "cpu":
            return f"the cpu backend steps CPU tensors only, not {device.type} tensors"
        return _native_reason("CPU")
    if name == "cuda":
        if device.type != "cuda":
            return f"the cuda backend steps CUDA tensors only, not {device.type} tensors"
        return _native_reason("CUDA") or (
            None if torch.cuda.is_available() else "no CUDA device is available")
    if name == "triton":
        return _triton_reason(device)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKEND_NAMES}")


def available_backends(device: torch.device | str | None = None) -> dict[str, str | None]:
    """Map every backend to None if it can run on `device` (default: cuda if present, else cpu),
    or to the reason it cannot."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {name: unavailable_reason(name, device) for name in IMPLEMENTATIONS}


def choose(name: str, device: torch.device) -> str:
    """The implementation `name` means on `device` ("auto": the first that runs there), made
    ready to run (the Triton op registered), or an error saying why it cannot run."""
    if name == "auto":
        for candidate in IMPLEMENTATIONS:
            # Triton runs on CPU tensors only under its interpreter, slowly: never auto.
            if candidate == "triton" and device.type != "cuda":
                continue
            if unavailable_reason(candidate, device) is None:
                if candidate == "torch":
                    _warn_fallback(device)
                name = candidate
                break
    elif name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKEND_NAMES}")
    else:
        reason = unavailable_reason(name, device)
        if reason is not None:
            raise RuntimeError(f"backend {name!r} cannot run on {device}: {reason}")
    if name == "triton":
        # Imported here, outside any step: an import while torch.compile traces would break it.
        ops.register_triton()
    return name


_warned_fallback: set[str] = set()


def _warn_fallback(device: torch.device) -> None:
    """Say once per device type that auto fell back to the pure-PyTorch step because the
    compiled extension could not be used (a missing GPU is not worth a warning)."""
    if native_extension.load_error is None or device.type in _warned_fallback:
        return
    _warned_fallback.add(device.type)
    native = "cuda" if device.type == "cuda" else "cpu"
    warnings.warn(
        f"TMSGD(backend='auto') cannot use the fused `{native}` backend on {device.type} "
        f"(several times faster than the pure-PyTorch step it runs instead): "
        f"{native_extension.load_error}",
        RuntimeWarning,
        stacklevel=4,
    )
