"""The checks every step makes, as C loops from the extension (csrc/plan_checks.cpp: about 80 us
per step for 161 params in Python against a few us in C, on the project's 2-core CPU machine),
with Python versions that compute the same for builds without it."""

from __future__ import annotations

from itertools import chain

import torch

from . import native_extension


def _same_state_objects(state: dict, params: list, ids: tuple) -> bool:
    return tuple(map(id, chain.from_iterable(
        map(dict.values, map(state.__getitem__, params))))) == ids


def _layout_fingerprint(tensors: list) -> int:
    return hash(tuple((t.data_ptr(), t.dtype, t.device, t.shape, t.stride()) for t in tensors))


def _first_mismatched_grad(params: list, grads: list) -> int:
    for index, (param, grad) in enumerate(zip(params, grads)):
        if (grad.layout != torch.strided or grad.dtype != param.dtype
                or grad.shape != param.shape or grad.device != param.device):
            return index
    return -1


_C = native_extension._C
# same_state_objects(state, params, ids): whether each param's state dict holds, in order, the
# objects whose ids are given.
same_state_objects = _same_state_objects if _C is None else _C.same_state_objects
# layout_fingerprint(tensors): a hash of their addresses, dtypes, devices, sizes and strides.
layout_fingerprint = _layout_fingerprint if _C is None else _C.layout_fingerprint
# first_mismatched_grad(params, grads): the index of the first gradient that is not strided or
# differs from its param in dtype, shape or device, else -1.
first_mismatched_grad = _first_mismatched_grad if _C is None else _C.first_mismatched_grad
