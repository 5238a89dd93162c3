"""Flattened buffers, an explicit opt-in: `flatten_parameters(module)` puts a module's trainable
params into one contiguous buffer per device and dtype (and their gradients, as autograd makes
them, into a second one), so the optimizer can step each buffer as one range instead of a list
of tensors.

The module is changed once, here, where the user asked for it; the optimizer never re-points a
param. The plan (tmsgd_kernels/step_plan.py) asks `flat_run` whether a run's params, gradients
and state lie back to back in one storage, each in its param's memory order, and steps such a run
as one range; every step `FlatRun.still_matches` confirms that the gradients are still the ones
the run was built on. If the module changes later (a dtype, new data, other gradients), the step
simply follows the tensors as they are then.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .local_tensors import is_dtensor
from .overlap import dense_without_overlap
from .plan_checks import layout_fingerprint


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


def same_memory_order(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two dense tensors of one shape store their elements in the same order: equal
    strides on every dimension longer than 1 (a stride of a size-1 dimension is never used).
    Only then does element i of one's memory range belong to element i of the other's."""
    return a.shape == b.shape and all(
        x == y for x, y, size in zip(a.stride(), b.stride(), a.shape) if size > 1)


@dataclass(frozen=True)
class FlatRun:
    """A run whose params, gradients and state each lie back to back in one storage, each
    tensor in its param's memory order: stepped as one range per list while `still_matches`
    says the gradients are laid out as those the run was built on."""

    param: torch.Tensor
    grad: torch.Tensor
    grad_layout: int  # plan_checks.layout_fingerprint of the gradients the run was built on
    delta_even: torch.Tensor
    delta_odd: torch.Tensor
    momentum_buffer: torch.Tensor | None

    def still_matches(self, grads: list[torch.Tensor]) -> bool:
        """Whether `grads` (the run's gradients now, in run order) sit where, and are laid out
        as, those the run was built on: the same fingerprint of addresses, dtypes, devices,
        sizes and strides (one C loop, about 4 us for 161 tensors on the project's 2-core
        machine). A gradient replaced at the same address with other strides, or whose strides
        were changed in place (`grad.t_()`), must not be stepped as one range."""
        return layout_fingerprint(grads) == self.grad_layout


def flat_run(params: list[torch.Tensor], states: list[dict], momentum: bool) -> FlatRun | None:
    """The one-range form of a run (params with gradients, their state dicts in the same
    order), or None. It has one when the params and their gradients each lie back to back in one
    storage, every gradient in its param's memory order, and the params have all taken the same
    number of steps. The run's history (and momentum buffers, with `momentum`) are then moved into
    one buffer per key, each param's entry becoming a view of it in its param's layout, unless
    they already lie that way."""
    if len(params) < 2 or any(p.is_complex() or p.grad is None for p in params):
        return None
    grads = [p.grad for p in params]
    if not all(map(same_memory_order, grads, params)):
        return None
    param = one_range(params)
    grad = one_range(grads) if param is not None else None
    if grad is None or len({int(s["step"]) for s in states}) != 1:
        return None
    keys = ("delta_even", "delta_odd") + (("momentum_buffer",) if momentum else ())
    if any(len({s[key].dtype for s in states}) != 1 for key in keys):
        return None  # one buffer per key holds one dtype
    flat_state = {}
    for key in keys:
        values = [s[key] for s in states]
        flat_state[key] = one_range(values)
        if flat_state[key] is None or not all(map(same_memory_order, values, params)):
            flat_state[key] = _relaid(params, states, key)
    return FlatRun(param, grad, layout_fingerprint(grads),
                   flat_state["delta_even"], flat_state["delta_odd"],
                   flat_state.get("momentum_buffer"))


def _relaid(params: list[torch.Tensor], states: list[dict], key: str) -> torch.Tensor:
    """One new buffer holding every state's `key`, each a view in its param's layout (the
    state dict entry is replaced by the view); returns the buffer."""
    values = [s[key] for s in states]
    buffer = torch.empty(sum(p.numel() for p in params), dtype=values[0].dtype,
                         device=params[0].device)
    offset = 0
    for state, value, param in zip(states, values, params):
        view = _view(buffer, offset, param)
        view.copy_(value)
        state[key] = view
        offset += param.numel()
    return buffer


def _view(flat: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """The elements [offset, offset + like.numel()) of `flat`, with `like`'s shape and strides."""
    return flat.as_strided(like.shape, like.stride(), flat.storage_offset() + offset)


def flatten_parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    """Move `module`'s trainable params into one contiguous buffer per (device, dtype), in the
    order `module.named_parameters()` yields them, keeping each param's values, shape and memory
    format; returns the buffers. Call it before creating the optimizer.

    Gradients are neither created nor changed in meaning: a param's gradient lives in a view of a
    matching gradient buffer once autograd has made one (an existing `.grad` is copied into its
    view now; a gradient autograd allocates anew, e.g. after `zero_grad(set_to_none=True)`, is
    copied there once it is complete; with `zero_grad(set_to_none=False)` autograd accumulates in
    the view). A param autograd never reaches (an unused layer, an unrouted expert) keeps
    `.grad = None` and is skipped by the optimizer, as torch.optim.SGD skips it. When every param
    of a buffer has a gradient, the gradients lie back to back and the step is one range.

    Frozen params (`requires_grad=False`) are left where they are: no optimizer steps them.
    Refused, with a ValueError before anything changes: complex, DTensor and non-dense params,
    and two distinct params that share memory (`b.data = a.data`; flattening would untie them;
    tie them as one Parameter instead, which is kept)."""
    named = list(module.named_parameters())
    _check_no_shared_memory(named)
    groups: dict[tuple, list[torch.nn.Parameter]] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        if param.is_complex():
            raise ValueError(f"flatten_parameters does not flatten complex params ({name})")
        if is_dtensor(param):
            raise ValueError(f"flatten_parameters does not flatten DTensor params ({name}): "
                             f"a sharded param's storage belongs to its mesh")
        if not dense_without_overlap(param):
            raise ValueError(f"flatten_parameters needs dense params; {name} has shape "
                             f"{tuple(param.shape)} and strides {param.stride()}")
        grad = param.grad
        if grad is not None and (grad.shape != param.shape or grad.dtype != param.dtype
                                 or grad.device != param.device or grad.is_sparse):
            raise ValueError(f"flatten_parameters: the gradient of {name} does not match it "
                             f"(shape {tuple(grad.shape)}, {grad.dtype}, {grad.layout}, "
                             f"{grad.device})")
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
                    param.grad = grad_view
                param.data = view
                param.register_post_accumulate_grad_hook(_keep_grad_in(grad_view))
                offset += param.numel()
        buffers.append(flat)
    return buffers


def _check_no_shared_memory(named: list[tuple[str, torch.nn.Parameter]]) -> None:
    """Refuse distinct params (frozen ones included) whose bytes overlap: moving one of them
    would untie it from the other. Meta params hold no memory."""
    spans = sorted((str(p.device), p.data_ptr(), p.data_ptr() + p.numel() * p.element_size(),
                    name) for name, p in named if p.numel() and p.device.type != "meta")
    for before, after in zip(spans, spans[1:]):
        if before[0] == after[0] and after[1] < before[2]:
            raise ValueError(
                f"flatten_parameters: params {before[3]} and {after[3]} share memory; "
                f"flattening would untie them. Tie them as one Parameter (b = a, not "
                f"b.data = a.data), which is kept, or give each its own storage")


def _keep_grad_in(grad_view: torch.Tensor):
    """A post-accumulate-grad hook keeping the param's gradient in `grad_view`: a gradient
    autograd allocated anew is copied there and `.grad` is pointed at the view. It never runs
    for a param autograd did not reach, so no gradient appears that autograd would not make."""
    def hook(param: torch.Tensor) -> None:
        grad = param.grad
        if grad is None or grad is grad_view:
            return  # accumulated in place
        if (grad.dtype != grad_view.dtype or grad.shape != grad_view.shape
                or grad.device != grad_view.device or grad.layout != torch.strided):
            return  # the module changed since it was flattened, or a sparse grad: follow it
        if grad.requires_grad:
            return  # backward(create_graph=True): a copy would drop the gradient's graph
        with torch.no_grad():
            grad_view.copy_(grad)
        param.grad = grad_view

    return hook
