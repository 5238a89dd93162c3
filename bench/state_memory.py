"""Optimizer-state bytes per parameter element, measured: each optimizer takes one step on a
1M-element fp32 param and the bytes of every tensor in its state are summed."""

from __future__ import annotations

import torch

from tmsgd_kernels import TMSGD

ELEMENTS = 1 << 20

OPTIMIZERS = {
    "TMSGD, fp32 history": lambda p: TMSGD(p, lr=1e-3),
    "TMSGD, bf16 history": lambda p: TMSGD(p, lr=1e-3, history_dtype=torch.bfloat16),
    "TMSGD + momentum, fp32 history": lambda p: TMSGD(p, lr=1e-3, momentum=0.9),
    "TMSGD + momentum, bf16 history": lambda p: TMSGD(p, lr=1e-3, momentum=0.9,
                                                      history_dtype=torch.bfloat16),
    "SGD + momentum": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}


def state_bytes_per_element() -> dict[str, float]:
    result = {}
    for name, make in OPTIMIZERS.items():
        param = torch.nn.Parameter(torch.zeros(ELEMENTS))
        param.grad = torch.ones(ELEMENTS)
        optimizer = make([param])
        optimizer.step()
        total = sum(value.numel() * value.element_size()
                    for state in optimizer.state.values() for value in state.values()
                    if isinstance(value, torch.Tensor))
        result[name] = total / ELEMENTS
    return result
