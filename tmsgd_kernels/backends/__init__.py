"""Backend registry: which fused-step implementations exist and which can run on a device.

Every backend provides the same bucket step (the kernel contract of DESIGN.md section 3):

    step_bucket(params, grads, history, momentum_buffer, step, options, grad_scale=None,
                found_inf=None) -> None

- params: list of contiguous tensors of one dtype on one device, updated in place (fp64, fp32,
  fp16, bf16; complex params arrive as their real views).
- grads: list of contiguous tensors, same shapes and dtype as params.
- history: [2, N] tensor (N >= total elements of params, param i owns columns
  [offset_i, offset_i + numel_i) in list order), dtype fp32/fp64/bf16/fp16. After s completed steps,
  slot s % 2 holds d2 and slot (s + 1) % 2 holds d1; the step writes d_new over slot s % 2.
- momentum_buffer: [N] tensor in the params' dtype, or None when momentum == 0.
- step: int64 0-dim tensor on the params' device: the count of completed steps; incremented.
- options: a StepOptions (tmsgd_kernels/step_options.py): lr (a float, or a 0-dim tensor on the
  params' device), the delta-form b1 and b2, momentum, dampening, weight_decay, nesterov,
  maximize, switch_step.
- grad_scale: None or a 0-dim float tensor; grads are divided by it.
- found_inf: None or a 0-dim float tensor; when non-zero, nothing at all is changed.
Math runs in fp32 for fp16/bf16/fp32 params and in fp64 for fp64 params.

Each backend module exposes `name`, `unavailable_reason(device) -> str | None` and `step_bucket`.
"""

from __future__ import annotations

import importlib

import torch

# Order is preference for backend="auto" (fastest first).
_BACKEND_MODULES = {
    "cuda": "tmsgd_kernels.backends.native_cuda",
    "triton": "tmsgd_kernels.backends.triton_backend",
    "cpu": "tmsgd_kernels.backends.native_cpu",
    "torch": "tmsgd_kernels.backends.torch_backend",
}

BACKEND_NAMES = ("auto", *_BACKEND_MODULES)


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
                return _module(candidate)
        raise RuntimeError(f"no TM-SGD backend can run on {device}")  # torch always can
    if name not in _BACKEND_MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKEND_NAMES}")
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} cannot run on {device}: {reason}")
    return _module(name)
