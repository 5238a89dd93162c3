"""Backend registry: which implementations of the TM-SGD step exist and which can run on a device.

Every backend module exposes `name`, `unavailable_reason(device) -> str | None` and one function
with the kernel contract's arguments (documented once, in tmsgd_kernels/ops.py):

    step(params, grads, delta_even, delta_odd, momentum_buffers, steps, scalars,
         grad_scale=None, found_inf=None) -> None

`scalars` is a StepScalars (tmsgd_kernels/step_scalars.py). `cpu` and `cuda` call the op
tmsgd_kernels::tmsgd_step, `triton` the op tmsgd_kernels::tmsgd_step_triton; `torch` is plain
PyTorch (torch._foreach_*), which torch.compile traces through.
"""

from __future__ import annotations

import importlib
import warnings

import torch

# Order is preference for backend="auto" (fastest first).
_BACKEND_MODULES = {
    "cuda": "tmsgd_kernels.backends.native_cuda",
    "triton": "tmsgd_kernels.backends.triton_backend",
    "cpu": "tmsgd_kernels.backends.native_cpu",
    "torch": "tmsgd_kernels.backends.torch_backend",
}

BACKEND_NAMES = ("auto", *_BACKEND_MODULES)

# The backend modules `resolve` has returned, by name: the optimizer's step looks its backends
# up here (a plain dict, which torch.compile traces as a constant).
MODULES: dict[str, object] = {}


def _module(name: str):
    try:
        return importlib.import_module(_BACKEND_MODULES[name])
    except ImportError as error:  # a backend whose module is absent from this build
        return error


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """None if backend `name` can step tensors on `device`, else a sentence saying why not."""
    module = _module(name)
    if isinstance(module, ImportError):
        return f"its module could not be imported ({module})"
    return module.unavailable_reason(torch.device(device))


def available_backends(device: torch.device | str | None = None) -> dict[str, str | None]:
    """Map every backend to None if it can run on `device` (default: cuda if present, else cpu),
    or to the reason it cannot."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {name: unavailable_reason(name, torch.device(device)) for name in _BACKEND_MODULES}


def resolve(name: str, device: torch.device):
    """Return the backend module that `name` means on `device`, or raise why it cannot run."""
    if name == "auto":
        for candidate in _BACKEND_MODULES:
            # Under TRITON_INTERPRET=1 Triton also runs on CPU tensors, but only slowly: never auto.
            if candidate == "triton" and device.type != "cuda":
                continue
            if unavailable_reason(candidate, device) is None:
                if candidate == "torch":
                    _warn_fallback(device)
                return _loaded(candidate)
        raise RuntimeError(f"no TM-SGD backend can run on {device}")  # torch always can
    if name not in _BACKEND_MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKEND_NAMES}")
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} cannot run on {device}: {reason}")
    return _loaded(name)


def _loaded(name: str):
    module = MODULES[name] = _module(name)
    # A backend that imports its kernels lazily does it now, outside any step: an import while
    # torch.compile traces a step would break the graph.
    load = getattr(module, "load", None)
    if load is not None:
        load()
    return module


_warned_fallback: set[str] = set()


def _warn_fallback(device: torch.device) -> None:
    """Say once per device type that auto fell back to the slow torch backend because the
    compiled extension could not be used (a missing GPU is not worth a warning)."""
    from .. import native_extension

    native = "cuda" if device.type == "cuda" else "cpu"
    if native_extension.load_error is None or device.type in _warned_fallback:
        return
    _warned_fallback.add(device.type)
    warnings.warn(
        f"TMSGD(backend='auto') runs the pure-PyTorch backend on {device.type}, several times "
        f"slower than the fused `{native}` backend, because {native_extension.load_error}",
        RuntimeWarning,
        stacklevel=4,
    )
