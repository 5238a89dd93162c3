"""The kernel contract, defined once: the step's tensor lists, its scalars and the op schema built
from them. Every implementation takes exactly these arguments (docs/DESIGN.md section 4); the C++
side declares the same parameter list once (csrc/step_signature.h) and the dispatcher refuses to
load a kernel whose signature drifted from the schema generated here.

This module imports only torch, so triton_kernels/ may import it without importing the package.

    params            list, mutated. One device, one dtype (fp64, fp32, fp16, bf16; complex
                      params arrive as their real views). Any dense non-overlapping layout.
    grads             list, read. Same shapes, dtype and device as params (strides may differ).
    delta_even        list, mutated: per param, the step d[k] of its latest even k.
    delta_odd         list, mutated: per param, the step d[k] of its latest odd k.
                      Both have the param's shape and strides and one history dtype (fp64, fp32,
                      fp16, bf16, or int8: 8-bit history) for the whole call.
    delta_even_scales list, mutated: empty for a float history; with an int8 history, per param
    delta_odd_scales  the fp32 block scales of its slot's codes (tmsgd_kernels/int8_history.py:
                      contiguous, shape (rows, ceil(elements per row / 256))). A slot stands
                      for code * scale, and the step stores d_new as the reference encoder does.
    momentum_buffers  list, mutated: per param, in the params' dtype, or empty when momentum == 0;
                      or, with an int8 history, int8 codes (8-bit momentum, laid out as a
                      history slot's codes) when momentum_scales is not empty.
    momentum_scales   list, mutated: empty, or per param the fp32 block scales of its 8-bit
                      momentum buffer (shaped as delta_even_scales). The step uses the fp32 new
                      buffer and stores it as the reference encoder does.
    steps             list, mutated: per param, an int64 one-element tensor counting its
                      completed steps. On the CPU (everything that depends on the count is
                      decided on the host) or on the params' device (the kernels read it there).
                      Advanced by one, unless found_inf is non-zero.
    StepScalars       lr (or lr_tensor: one element, any real dtype, on the params' device or
                      the CPU), b1, b2 (d_new = b1 * d1 + b2 * d2 - lr * u), momentum,
                      dampening, weight_decay, nesterov, maximize (the direction u, as
                      torch.optim.SGD defines it), switch_step (a param whose count is below it
                      takes the SGD step d_new = -lr * u).
    grad_scale        None, or a one-element float tensor (params' device or CPU): grads are
                      divided by it.
    found_inf         None, or a one-element float tensor (params' device or CPU): when non-zero
                      nothing at all changes.

A param with count k reads d2 from slot k % 2 (delta_even if k is even), d1 from the other slot,
and writes d_new over slot k % 2; on its first step (k == 0) the momentum buffer becomes u itself.
Math runs in fp32 for fp16/bf16/fp32 params and in fp64 for fp64 params.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

# The tensor lists in argument order, with the alias set of those the step writes.
TENSOR_LISTS: tuple[tuple[str, str | None], ...] = (
    ("params", "a"),
    ("grads", None),
    ("delta_even", "b"),
    ("delta_odd", "c"),
    ("delta_even_scales", "f"),
    ("delta_odd_scales", "g"),
    ("momentum_buffers", "d"),
    ("momentum_scales", "h"),
    ("steps", "e"),
)

# Optional tensors after the scalars.
OPTIONAL_TENSORS: tuple[str, ...] = ("grad_scale", "found_inf")


@dataclass(frozen=True)
class StepScalars:
    """The step's scalars, in the op's argument order. The field types make the schema."""

    lr: float
    lr_tensor: torch.Tensor | None
    b1: float
    b2: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool
    switch_step: int

    @classmethod
    def make(cls, lr: float | torch.Tensor, b1: float, b2: float, momentum: float = 0.0,
             dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
             maximize: bool = False, switch_step: int = 0) -> StepScalars:
        """From a float or tensor lr; every value converted to the schema's type."""
        tensor = lr if isinstance(lr, torch.Tensor) else None
        return cls(0.0 if tensor is not None else float(lr), tensor, float(b1), float(b2),
                   float(momentum), float(dampening), float(weight_decay), bool(nesterov),
                   bool(maximize), int(switch_step))

    @property
    def lr_value(self) -> float | torch.Tensor:
        """The learning rate as the user gave it: the tensor when there is one."""
        return self.lr if self.lr_tensor is None else self.lr_tensor

    def arguments(self) -> tuple:
        """The scalars in the op's order (not dataclasses.astuple, which copies tensors; nor an
        attrgetter, which torch.compile cannot trace)."""
        return tuple([getattr(self, name) for name in _SCALAR_NAMES])


_SCALAR_NAMES = tuple(field.name for field in dataclasses.fields(StepScalars))

_SCHEMA_TYPES = {"float": "float", "bool": "bool", "int": "int",
                 "torch.Tensor | None": "Tensor?"}


def schema() -> str:
    """The op schema after the op's name, generated from the definitions above."""
    lists = [f"Tensor({alias}!)[] {name}" if alias else f"Tensor[] {name}"
             for name, alias in TENSOR_LISTS]
    scalars = [f"{_SCHEMA_TYPES[field.type]} {field.name}"
               for field in dataclasses.fields(StepScalars)]
    optional = [f"Tensor? {name}" for name in OPTIONAL_TENSORS]
    return "(" + ", ".join(lists + scalars + optional) + ") -> ()"
