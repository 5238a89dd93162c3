"""Flattened buffers, an explicit opt-in: `flatten_parameters(module)` puts a module's params into
one contiguous buffer per device and dtype (and their gradients into a second one), so the
optimizer can step each buffer as one range instead of a list of tensors.

The module is changed once, here, where the user asked for it; the optimizer never re-points a
param. It notices params that lie back to back in one storage (tmsgd_kernels/step_plan.py) and
steps them as one range, with their state allocated the same way. If the module changes later
(a dtype, new data, ties), the step simply follows the params as they are then.
"""

from __future__ import annotations

import torch

from .overlap import dense_without_overlap


def one_range(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """A 1-D view over `tensors` when those with elements lie back to back, in list order, in
    one storage (one dtype, each dense), else None. Elements are in memory order, so tensors that
    share their strides pairwise (a param and its state) map onto each other element for
    element. Empty tensors hold no elements, wherever they point."""
    full = [t for t in tensors if t.numel()]
    if not full:
        return None
    first = full[0]
    storage = first.untyped_storage().data_ptr()
    end = first.data_ptr()
    for tensor in full:
        if (tensor.dtype != first.dtype or tensor.data_ptr() != end
                or tensor.untyped_storage().data_ptr() != storage
                or not dense_without_overlap(tensor)):
            return None
        end += tensor.numel() * tensor.element_size()
    total = sum(t.numel() for t in full)
    return first.as_strided((total,), (1,), first.storage_offset())


def _view(flat: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """The elements [offset, offset + like.numel()) of `flat`, with `like`'s shape and strides."""
    return flat.as_strided(like.shape, like.stride(), flat.storage_offset() + offset)


def flatten_parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    """Move `module`'s params into one contiguous buffer per (device, dtype), in the order
    `module.parameters()` yields them, keeping each param's values, shape and memory format;
    returns the buffers. Gradients get a matching buffer: each param's `.grad` starts as a view
    into it (zeros), autograd accumulates into that view in place, and a gradient allocated anew
    (after `zero_grad(set_to_none=True)`) is copied into the view once it is complete, so the
    grads stay one range too. Call it before creating the optimizer; with
    `zero_grad(set_to_none=False)` no gradient is ever copied.

    Complex params are not flattened (refused with an error)."""
    groups: dict[tuple, list[torch.nn.Parameter]] = {}
    for param in module.parameters():
        if param.is_complex():
            raise ValueError("flatten_parameters does not flatten complex params")
        if not dense_without_overlap(param):
            raise ValueError(f"flatten_parameters needs dense params; one has shape "
                             f"{tuple(param.shape)} and strides {param.stride()}")
        groups.setdefault((param.device, param.dtype), []).append(param)
    buffers = []
    for (device, dtype), params in groups.items():
        total = sum(p.numel() for p in params)
        flat = torch.empty(total, dtype=dtype, device=device)
        flat_grad = torch.zeros(total, dtype=dtype, device=device)
        offset = 0
        with torch.no_grad():
            for param in params:
                view = _view(flat, offset, param)
                view.copy_(param)
                grad_view = _view(flat_grad, offset, param)
                if param.grad is not None:
                    grad_view.copy_(param.grad)
                param.data = view
                param.grad = grad_view
                param.register_post_accumulate_grad_hook(_keep_grad_in(grad_view))
                offset += param.numel()
        buffers.append(flat)
    return buffers


def _keep_grad_in(grad_view: torch.Tensor):
    def hook(param: torch.Tensor) -> None:
        grad = param.grad
        if grad is None or grad is grad_view or grad.dtype != grad_view.dtype:
            return  # nothing to do, or the module changed since it was flattened: follow it
        if grad.shape != grad_view.shape:
            return
        if (grad.data_ptr() == grad_view.data_ptr() and grad.shape == grad_view.shape
                and grad.stride() == grad_view.stride()):
            return  # already accumulating in place
        with torch.no_grad():
            grad_view.copy_(grad)
        param.grad = grad_view

    return hook
